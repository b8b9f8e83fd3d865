"""Installs the `sharpmask` package (projects/SharpMask/sharpmask): DeepMask, SharpMask,
InstanceFCN and RefineMask for detectron2."""
from setuptools import find_packages, setup

setup(
    name="sharpmask",
    version="0.1.0",
    description="Segment-proposal networks (DeepMask, SharpMask, InstanceFCN) and the "
    "RefineMask mask head for detectron2",
    package_dir={"": "projects/SharpMask"},
    packages=find_packages("projects/SharpMask"),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "detectron2>=0.6",
        "fvcore",
        "pycocotools>=2.0.2",
        "faster-coco-eval>=1.8",  # Boundary AP (iouType "boundary")
        "opencv-contrib-python-headless",  # cv2 with ximgproc (Selective Search)
        "numpy",
        "matplotlib",
        "tqdm",
    ],
)
