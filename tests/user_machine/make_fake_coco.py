"""Writes a COCO 2014/2017 layout under the given folder (`coco/annotations/instances_*.json`
and empty image folders), so that a test run sees the files detectron2's builtin COCO
datasets look for, as on a user's machine (`make test-user-machine`).

    python tests/user_machine/make_fake_coco.py OUTPUT_FOLDER
"""
import json
import os
import sys

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

SPLITS = ["train2014", "val2014", "train2017", "val2017", "valminusminival2014",
          "minival2014"]


def write_fake_coco(root):
    """One 640x480 image with one square object per split, the 80 COCO categories."""
    categories = [{"id": c["id"], "name": c["name"], "supercategory": "thing"}
                  for c in COCO_CATEGORIES if c["isthing"]]
    os.makedirs(os.path.join(root, "coco", "annotations"), exist_ok=True)
    for split in SPLITS:
        os.makedirs(os.path.join(root, "coco", split), exist_ok=True)
        coco = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": 480,
                            "width": 640}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                 "bbox": [10, 10, 100, 100], "area": 10000.0,
                                 "segmentation": [[10, 10, 110, 10, 110, 110, 10, 110]]}],
                "categories": categories}
        with open(os.path.join(root, "coco", "annotations", f"instances_{split}.json"),
                  "w") as f:
            json.dump(coco, f)


if __name__ == "__main__":
    write_fake_coco(sys.argv[1])
