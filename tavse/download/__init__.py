"""Resumable, verified downloads of the two corpora TAVSE reads, each recorded in a manifest.

* ``speakingfaces``: ``image_audio/sub_{id}_ia.zip`` of the gated HuggingFace dataset
  ``issai/Speaking_Faces`` (6.6-8.0 GB per speaker, about 1 TB for all 142), saved as
  ``OUT/sub_{id}_ia.zip``.
* ``demand``: the DEMAND noise zips of Zenodo record 1227121 (open access, no account), checked
  against Zenodo's MD5s.

``OUT`` is the folder ``params.yaml`` points at (``data.speakingfaces_dir`` / ``data.demand_dir``).
Besides the archives it holds ``manifest.json`` (:mod:`tavse.corpus.manifest`): the source (Hub
repo, endpoint, requested revision and the commit it resolved to; or the Zenodo record) and per
archive its path, size and hashes. It is rewritten atomically after each completed file, so a
killed download leaves a valid manifest of the files that are complete. The stages read the
archive list from it.

The modules, each using only those above it:

* ``errors``: what stops a file, a run or a thread;
* ``files``: a remote file, its ``.part`` and what of it is on disk;
* ``secrets``: the HF token (environment, ``.env``, the huggingface CLI's file), where it may be
  sent, and :func:`~tavse.download.secrets.redact`, which every message goes through;
* ``progress``: sizes, rates and ETAs; the progress of a run; ``download-state.json``; the lock;
* ``http``: the engine: one file, resumed with ``Range``, verified, renamed atomically;
* ``fetch``: a run: the free-space check, the manifest's one writer, ``--jobs`` threads;
* ``huggingface`` (SpeakingFaces from the Hub) and ``zenodo`` (DEMAND);
* ``status``: ``--status``, from the folder alone (no network);
* ``__main__``: the command line.

CLI::

    python -m tavse.download speakingfaces --out DIR [--speakers 1-10,121] [--revision REV] [--jobs N] [--status] [--verify]
    python -m tavse.download demand --out DIR [--envs DKITCHEN,SCAFE] [--jobs N] [--status] [--verify]
    python -m tavse.download manifest DIR [--corpus speakingfaces|demand]   # archives obtained elsewhere
    python -m tavse.download verify DIR                                     # re-hash against the manifest
"""
