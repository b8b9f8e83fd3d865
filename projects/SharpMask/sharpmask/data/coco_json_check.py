"""A COCO instances file checked in full before detectron2 or pycocotools read it: in every
record, every field that they, our training and our evaluation use.

Why: pycocotools indexes without checks (a repeated image id silently drops one image and moves
its annotations to the other; an annotation of an unknown image or category is silently left out
or fails later with a bare KeyError), and decodes corrupt RLE counts past its buffer; detectron2's
loader stops at the first missing field with a KeyError that names neither file nor record.
Value problems that leave a record usable (a non-finite box, a polygon of fewer than 3 points, an
RLE of another image size) are not errors here: `validation.annotation_problem` skips those
annotations with a warning, in training and evaluation alike.
"""
import json
import math

NUMBER_TYPES = (int, float)
EXAMPLES = 5


def rle_counts_problem(counts, height, width):
    """Why compressed COCO RLE `counts` (str or bytes) cannot be an (height, width) mask, or
    None: pycocotools decodes runs that do not sum to the image without a check (and writes
    past its buffer). Reads the counts as pycocotools' rleFrString does: 6-bit groups from
    character 48, 5 data bits and a continuation bit, the last group's 0x10 bit the sign,
    runs after the second stored as differences to the run two before."""
    text = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
    runs, position = [], 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                return "the RLE counts end inside a number"
            c = text[position] - 48
            if not 0 <= c < 64:
                return f"the RLE counts hold {chr(text[position])!r}, not a COCO RLE character"
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            position, shift = position + 1, shift + 1
            if not more and c & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    if any(r < 0 for r in runs) or sum(runs) != height * width:
        return (f"the RLE counts' runs sum to {sum(runs)} (or some are negative), not the "
                f"{height} x {width} = {height * width} pixels of the image")
    return None


def _is_int(value):
    return type(value) is int


def _is_number(value):
    return type(value) in NUMBER_TYPES


def _image_problem(image):
    if not isinstance(image, dict):
        return f"is a {type(image).__name__}, not an object"
    if not _is_int(image.get("id")):
        return f"id {image.get('id')!r} is not an integer"
    if not isinstance(image.get("file_name"), str) or not image["file_name"]:
        return f"file_name {image.get('file_name')!r} is not a non-empty string"
    for key in ("height", "width"):
        if not _is_int(image.get(key)) or image[key] <= 0:
            return f"{key} {image.get(key)!r} is not a positive integer"
    return None


def _segmentation_problem(segmentation):
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(map(_is_int, size))
                and min(size) >= 0):
            return f"segmentation: RLE size {size!r} is not [height, width]"
        if isinstance(counts, str):
            problem = rle_counts_problem(counts, *size)
            return f"segmentation: {problem}" if problem else None
        if isinstance(counts, list) and all(_is_int(c) and c >= 0 for c in counts):
            if sum(counts) != size[0] * size[1]:
                return (f"segmentation: the RLE counts sum to {sum(counts)}, not the "
                        f"{size[0]} x {size[1]} pixels of its size")
            return None
        return "segmentation: RLE counts must be a compressed string or a list of run lengths"
    if not isinstance(segmentation, list):
        return (f"segmentation is a {type(segmentation).__name__}: polygons (a list of "
                "[x0, y0, x1, y1, ...] lists) or an RLE object are expected")
    for polygon in segmentation:
        if not isinstance(polygon, list) or not all(map(_is_number, polygon)):
            return "segmentation: a polygon that is not a list of numbers"
    return None


def _annotation_problem(annotation, image_ids, category_ids):
    if not isinstance(annotation, dict):
        return f"is a {type(annotation).__name__}, not an object"
    if not _is_int(annotation.get("id")):
        return f"id {annotation.get('id')!r} is not an integer"
    if not _is_int(annotation.get("image_id")) or annotation["image_id"] not in image_ids:
        return f"image_id {annotation.get('image_id')!r} is not the id of an image in the file"
    if not _is_int(annotation.get("category_id")) or \
            annotation["category_id"] not in category_ids:
        return (f"category_id {annotation.get('category_id')!r} is not the id of a category in "
                "the file")
    bbox = annotation.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
        return f"bbox {bbox!r} is not [x, y, width, height] (4 numbers)"
    if annotation.get("iscrowd", 0) not in (0, 1) or isinstance(annotation.get("iscrowd"), bool):
        return f"iscrowd {annotation.get('iscrowd')!r} is not 0 or 1"
    area = annotation.get("area")
    if not _is_number(area) or not area >= 0 or math.isinf(area):
        return (f"area {area!r} is not a finite number >= 0 (pycocotools' evaluation reads it "
                "for the size ranges)")
    if "segmentation" in annotation:
        return _segmentation_problem(annotation["segmentation"])
    return None


def _first_repeat(records):
    """(index, id) of the first record whose integer id an earlier record has, or None."""
    seen = set()
    for k, record in enumerate(records):
        i = record.get("id") if isinstance(record, dict) else None
        if _is_int(i):
            if i in seen:
                return k, i
            seen.add(i)
    return None


def coco_json_problems(json_file):
    """What is wrong with the COCO instances file `json_file`, one line per kind of problem
    naming the file, the record (list index and id) and the field; [] when nothing is."""
    try:
        with open(json_file, "rb") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        return [f"{json_file} is not valid JSON: {e}"]
    if not isinstance(data, dict):
        return [f"{json_file} holds a {type(data).__name__}; a COCO file is an object with "
                "images, annotations and categories"]
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key, []), list) or (key == "images" and key not in data):
            return [f"{json_file}: {key!r} must be a list, got "
                    f"{type(data.get(key)).__name__}"]
    found = []  # (list, index, record id, problem)

    def check(key, records, rule):
        for k, record in enumerate(records):
            problem = rule(record)
            if problem:
                found.append((key, k, record.get("id") if isinstance(record, dict) else None,
                              problem))

    def category_problem(category):
        if not isinstance(category, dict) or not _is_int(category.get("id")):
            return "is not an object with an integer id"
        if not isinstance(category.get("name"), str):
            return f"name {category.get('name')!r} is not a string"
        return None

    images, categories = data["images"], data.get("categories", [])
    check("images", images, _image_problem)
    check("categories", categories, category_problem)
    image_set = {i.get("id") for i in images if isinstance(i, dict) and _is_int(i.get("id"))}
    category_set = {c.get("id") for c in categories
                    if isinstance(c, dict) and _is_int(c.get("id"))}
    annotations = data.get("annotations", [])
    check("annotations", annotations,
          lambda a: _annotation_problem(a, image_set, category_set))
    for key, records in (("images", images), ("categories", categories),
                         ("annotations", annotations)):
        repeat = _first_repeat(records)
        if repeat:
            found.append((key, *repeat, f"id {repeat[1]!r} is used by an earlier record too"))
    lines = [f"{json_file}: {key}[{k}]{'' if i is None else f' (id {i!r})'}: {problem}"
             for key, k, i, problem in found[:EXAMPLES]]
    if len(found) > EXAMPLES:
        lines.append(f"{json_file}: and {len(found) - EXAMPLES} more record(s) with problems")
    return lines


def check_coco_json(json_file):
    """Raise ValueError listing `coco_json_problems`, with what to do; None when valid."""
    problems = coco_json_problems(json_file)
    if problems:
        raise ValueError("not a usable COCO instances file:\n- " + "\n- ".join(problems)
                         + "\nFix or remove these records (detectron2's dataset format: "
                         "cocodataset.org/#format-data).")
