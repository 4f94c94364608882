"""coco-caption's metric keys, in its order: importable without torch, Java or pycocoevalcap, so
tables, leaderboards and the scoring command agree on one tuple."""

METRIC_KEYS: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
