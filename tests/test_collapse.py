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
