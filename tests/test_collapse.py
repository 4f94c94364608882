from fusionbench.metrics.collapse import caption_collapse


def test_one_caption_for_every_image_is_degenerate():
    preds = {i: "There is a purple triangle on a dark background." for i in range(200)}
    out = caption_collapse(preds)
    assert out["degenerate"] and out["modal_share"] == 1.0 and out["unique_share"] == 1 / 200
    assert "200 of 200 images get the same caption" in out["reason"]
    assert out["modal_caption"] == "there is a purple triangle on a dark background"


def test_a_handful_of_captions_for_many_images_is_degenerate():
    preds = {i: f"a {['red', 'blue', 'green', 'pink'][i % 4]} circle" for i in range(100)}
    out = caption_collapse(preds)  # modal share 0.25, but only 4 distinct captions for 100 images
    assert out["degenerate"] and out["reason"] == "only 4 distinct captions for 100 images"


def test_varied_captions_with_some_repeats_are_not_degenerate():
    colours = ["red", "blue", "green", "pink", "grey"]
    shapes = ["circle", "square", "triangle", "star"]
    preds = {
        i: f"a {colours[i % 5]} {shapes[(i // 5) % 4]} left of a {colours[(i // 20) % 5]} star"
        for i in range(100)
    }
    preds.update({100 + i: "a red circle" for i in range(30)})  # 30 of 130 share one caption
    out = caption_collapse(preds)
    assert not out["degenerate"] and "reason" not in out
    assert out["modal_share"] == 30 / 130


def test_normalisation_counts_case_and_punctuation_variants_as_one_caption():
    preds = {0: "A red circle.", 1: "a red circle", 2: "A RED CIRCLE!"}
    out = caption_collapse(preds)
    assert out["unique_share"] == 1 / 3 and not out["degenerate"]  # too few images to judge


def test_a_run_that_ignores_its_images_is_flagged_in_metrics_json(tmp_path):
    import json
    from pathlib import Path

    from fusionbench.config import load_config
    from fusionbench.experiment import run_experiment

    configs = Path(__file__).parent / "configs"
    cfg = load_config(
        configs / "tiny.yaml",
        [
            f"output_dir={tmp_path}",
            f"plugins=[{configs / 'plugins' / 'blind.py'}]",
            "model.fusion.name=blind",
            "data.num_test=12",
            "data.num_test_novel=12",
            "trainer.max_epochs=1",
            "logger.wandb.mode=disabled",
        ],
    )
    metrics = run_experiment(cfg, progress=False)
    saved = json.loads((Path(metrics["run_dir"]) / "metrics.json").read_text())
    for split in ("test", "test_novel"):
        assert saved["collapse"][split]["degenerate"] and saved["collapse"][split]["modal_share"] == 1.0
    assert saved["degenerate"].startswith("test: 12 of 12 images get the same caption")
