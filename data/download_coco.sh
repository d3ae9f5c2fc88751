#!/usr/bin/env bash
# Download and unpack COCO 2017 (train, val, annotations) into data/coco/.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p coco downloads
base=http://images.cocodataset.org
for file in zips/train2017.zip zips/val2017.zip annotations/annotations_trainval2017.zip; do
  name=$(basename "$file")
  if [ ! -f "downloads/$name" ]; then
    curl -L --fail --retry 3 -C - -o "downloads/$name.part" "$base/$file"
    mv "downloads/$name.part" "downloads/$name"
  fi
  unzip -q -n "downloads/$name" -d coco
done
echo "COCO 2017 is in $(pwd)/coco: train2017/, val2017/, annotations/"
