"""Visual features on disk: precomputed region features and the frozen-encoder feature cache.

``store`` reads and writes the files (a folder of ``.npz`` files, one per image, or one HDF5
file), ``extract`` runs an encoder's backbone stage over a dataset's images and writes them, and
``cache`` keys them by everything that determines them so that runs and grid cells with the same
frozen encoder compute them once.
"""
