"""Suite-wide settings."""
import torch

# One intra-op thread: the tests use tiny models, where more threads cost more than they give on a
# small (and often shared) CI machine. Subprocesses the tests start set OMP_NUM_THREADS themselves.
torch.set_num_threads(1)
