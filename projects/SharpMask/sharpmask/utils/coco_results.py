"""COCO results files of segment proposals, written without holding them all in memory.

A COCO val5k run writes 5,000 images x 1,000 proposals: built as one list of 5 million dicts
and dumped, that needs tens of GB. Here each image's proposals become the text of their JSON
list items as soon as they exist (`segment_results_text`, a few hundred KB), parts are kept
on disk, and `write_json_list` streams the parts into one JSON list that pycocotools' loadRes
reads as usual.
"""
import json

from .atomic_io import atomic_open


def segment_results_text(image_id, category_id, rles, boxes_xywh, scores):
    """One image's COCO results, as the text of JSON list items (comma-separated, no brackets;
    "" with no proposals). rles: pycocotools RLEs; boxes_xywh: (N, 4); scores: (N,)."""
    return ", ".join(json.dumps({
        "image_id": image_id, "category_id": category_id,
        "segmentation": {"size": [int(v) for v in rle["size"]],
                         "counts": rle["counts"].decode("ascii")},
        "bbox": [float(v) for v in box], "score": float(score)})
        for rle, box, score in zip(rles, boxes_xywh, scores))


def write_json_list(path, item_texts):
    """Write the JSON list whose items are the concatenation of `item_texts` (texts from
    `segment_results_text`, empty ones skipped), atomically, one text at a time."""
    with atomic_open(path, "w") as f:
        f.write("[")
        first = True
        for text in item_texts:
            if text:
                f.write(text if first else ", " + text)
                first = False
        f.write("]")
