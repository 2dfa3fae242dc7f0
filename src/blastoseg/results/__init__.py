"""The files of a segmentation run, one writer per model kind, shared by the CLI and the napari
widgets so that both write the same files with the same columns.

- :mod:`blastoseg.results.amodal`: ``write_amodal_results`` (dataset, ``counts.csv``,
  ``cells.csv``, ``framing.csv``);
- :mod:`blastoseg.results.brightfield`: ``write_brightfield_results`` (dataset, ``counts.csv``,
  ``cells.csv``, nuclei / overlap probability TIFFs);
- :mod:`blastoseg.results.overlap`: ``write_overlap_results`` (a probability TIFF per head and
  the thresholded overlap mask);
- :mod:`blastoseg.results.instances`: what the two instance writers share (the dataset and the
  two measurement tables);
- :mod:`blastoseg.results.files`: TIFF bytes, CSV text, atomic writes, refusing to overwrite.

The writers are named in the model-kind table (:data:`blastoseg.kinds.KINDS`, ``writer``). The
measurements themselves are computed in :mod:`blastoseg.measure`.
"""
