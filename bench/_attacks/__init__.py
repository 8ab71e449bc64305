"""The privacy attack classes of ``bench/privacy_attacks.py``, one small module each.

Every attack is written against the public API only: ``Federation.round`` with
ordinary requests a researcher holding the world's permits could send, and it
decides "leak" by comparing what it recovered with the truth read from the data
files (``World.truth``). A refusal (a site's, the hub's or a raised error) is
recorded with its reason and is not a leak.

Noise bounds (what counts as "recovered"): a count or a two-way table is recovered
when it equals the truth exactly (a linear program's feasible range is one integer,
the true one, with perturbed counts entered as +- the published largest deviation);
a 0/1 value when the raw estimate is within 0.05 of it; a continuous value when the
estimate is within 1 % of the variable's observed range at the site; repeated
answers leak when they differ and their mean rounds to the truth; a DP budget is
evaded when more epsilon was released on one patient population than its cap
(``world.EPSILON_CAP``); scope leaks on any statistic by a derived variable whose
source the permit does not grant; availability leaks when a node dies or takes more
than 30 s.

The modules register their attacks when imported; ``bench/privacy_attacks.py``
imports them in the order the attacks run (the opt-out attack changes a site's data
and the denial of service may take a node down, so they run last).
"""
