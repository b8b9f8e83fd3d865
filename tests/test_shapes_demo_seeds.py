"""The seed summary of `tools/shapes_demo.py --seeds`: mean and range, per-seed orderings."""
import importlib.util


def _shapes_demo(repo_root):
    spec = importlib.util.spec_from_file_location("shapes_demo",
                                                  repo_root / "tools" / "shapes_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(deepmask_ar100, sharpmask_ar100, iou, minutes):
    def metrics(ar100):
        return {"segm": {"AR@10": 1.0, "AR@100": ar100, "AR@1000": 2 * ar100},
                "bbox": {"AR@100": 50.0}}
    return {"results": {"DeepMask": metrics(deepmask_ar100),
                        "SharpMask": metrics(sharpmask_ar100)},
            "patch": {"DeepMask": {"mean_iou": iou}, "SharpMask": {"mean_iou": iou + 1}},
            "minutes": minutes}


def test_seeds_table_reports_mean_range_and_each_seeds_ratio(repo_root):
    text = _shapes_demo(repo_root).seeds_table({1: _run(20.0, 24.0, 50.0, 12.0),
                                                2: _run(22.0, 22.0, 60.0, 13.5)})
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and "method" not in line}
    # mask AR@10, AR@100, AR@1000, box AR@100, patch IoU: mean (min-max)
    assert rows["DeepMask"] == ["1.0 (1.0-1.0)", "21.0 (20.0-22.0)", "42.0 (40.0-44.0)",
                                "50.0 (50.0-50.0)", "55.0 (50.0-60.0)"]
    assert rows["SharpMask"][1] == "23.0 (22.0-24.0)"
    assert "- seed 1: mask AR@100 DeepMask 20.0, SharpMask 24.0 (SharpMask/DeepMask 1.20); " \
        "12.0 min" in text
    assert "(SharpMask/DeepMask 1.00); 13.5 min" in text


def test_demo_networks_start_from_the_demos_deepmask(repo_root, tmp_path, monkeypatch):
    """build_demo_cfg: SharpMask and InstanceFCN start from the DeepMask trained in the same
    output folder, unless the command line names another; DeepMask starts from nothing."""
    from sharpmask.engine.progress import build_demo_cfg

    monkeypatch.chdir(repo_root)
    deepmask = str(tmp_path / "deepmask" / "model_final.pth")
    assert build_demo_cfg("SharpMask", str(tmp_path), []).MODEL.SHARPMASK.DEEPMASK_WEIGHTS \
        == deepmask
    cfg = build_demo_cfg("InstanceFCN", str(tmp_path), [])
    assert cfg.MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS == deepmask
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN" and cfg.OUTPUT_DIR == str(tmp_path / "instancefcn")
    other = build_demo_cfg("InstanceFCN", str(tmp_path),
                           ["MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS", "/elsewhere.pth"])
    assert other.MODEL.INSTANCEFCN.DEEPMASK_TRUNK_WEIGHTS == "/elsewhere.pth"
    assert build_demo_cfg("DeepMask", str(tmp_path), []).MODEL.WEIGHTS == ""
