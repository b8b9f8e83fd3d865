from .category_splits import VOC_CATEGORIES, register_category_subset
from .datasets import COCO_VAL5K, SHAPES_DATASETS, register_all, register_shapes
from .shapes import CATEGORIES as SHAPES_CATEGORIES, ensure_shapes_split

__all__ = ["COCO_VAL5K", "SHAPES_DATASETS", "SHAPES_CATEGORIES", "VOC_CATEGORIES",
           "ensure_shapes_split", "register_all", "register_category_subset", "register_shapes"]
