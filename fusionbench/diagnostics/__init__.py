"""Diagnostics: how a captioner uses the image, beyond how close its captions are to the references.

CIDEr-D ranks captioners; these say why one fusion strategy beats another. One module per
diagnostic, each with the paper it follows:

* ``visual`` — visual reliance: CIDEr-D with the true images, with the images permuted among
  themselves (a seeded derangement) and with the train split's mean visual features (blind);
* ``chair`` / ``coco_chair`` — object hallucination, CHAIR-i and CHAIR-s (Rohrbach et al. 2018);
* ``facts`` — precision/recall of colour-shape pairs, sizes, counts and spatial relations on
  ``shapes``, and the held-out pairs of ``test_novel``;
* ``grounding`` — attention mass inside the named object's box and pointing-game accuracy
  (attention fusion only);
* ``diversity`` — distinct-1/-2, vocabulary, unique and copied captions.

``shapes_text`` reads ``shapes`` captions with the generator's lexicon; ``text`` runs the
caption-only diagnostics (no torch: ``fusionbench score --diagnostics``); ``run`` runs them all
for a tested run and is what ``fusionbench.experiment`` calls. Importing this package imports
no torch.
"""
