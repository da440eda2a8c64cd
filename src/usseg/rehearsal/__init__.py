"""Stand-ins of every real input of the paper preset, built offline and deterministically.

``usseg rehearsal DIR`` writes the benchmark archives under their official names and
layouts, every checkpoint the paper preset loads in its official release format (seeded
random weights), and ``DIR/rehearsal.yaml``, a configfile pointing the paper preset at them
(``file://`` URLs and their sha256) that shrinks only the amount of work. Numbers computed
on stand-ins are meaningless; the configfile sets ``tracking.rehearsal`` so that every
summary row and run says so.
"""
