"""What a photo's sidecars say that the index keeps for browsing: a landmark given by hand and the words to search.

Read from the JSON sidecar (our entry: tags, place, a name given by hand; the user's own top-level "keywords")
and the XMP sidecar of either naming (dc:subject and lr:hierarchicalSubject, the user's and ours). Every value is
untrusted: what is not a string is left out, and the text kept is capped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from ..errors import LandmarkError
from .jsonfile import XMP_SUFFIX, Recorded, read_sidecar, recorded, sidecar_path

NO_LANDMARK = ""  # `hand` of a photo a person said shows none of the landmarks
KEYWORDS_MAX = 4000  # characters of search text kept per photo


@dataclass(frozen=True)
class SidecarFacts:
    """hand: the landmark a person gave (NO_LANDMARK: none; None: nobody did); keywords: search text, one a line."""

    hand: str | None = None
    keywords: str = ""


def hand_label(entry: Recorded) -> str | None:
    """The landmark a person gave in our (checked) sidecar entry, NO_LANDMARK for "none of them"; None if nobody
    did."""
    if not entry.named:
        return None
    return entry.tags[0]["label"] if entry.tags else NO_LANDMARK


def sidecar_facts(photo: Path) -> SidecarFacts:
    """The facts of one photo's sidecars; a sidecar that cannot be read adds nothing (never raises)."""
    from .xmp import read_keywords

    words: list[str] = []
    try:
        sidecar = read_sidecar(sidecar_path(photo))
    except (LandmarkError, OSError):
        sidecar = {}
    entry = recorded(sidecar)
    own = sidecar.get("keywords")
    if isinstance(own, list):
        words += [w for w in own if isinstance(w, str)]
    words += [t["label"] for t in entry.tags]
    words += [entry.place[k] for k in ("name", "city", "country") if k in (entry.place or {})]
    for xmp in dict.fromkeys((photo.with_name(photo.name + XMP_SUFFIX), photo.with_name(photo.stem + XMP_SUFFIX))):
        try:
            found = read_keywords(xmp)
        except (LandmarkError, OSError, ValueError):
            continue
        words += found["subject"] + [w.replace("|", " ") for w in found["hierarchical"]]
    text = "\n".join(dict.fromkeys(" ".join(w.split()) for w in words if w.strip()))
    return SidecarFacts(hand_label(entry), text[:KEYWORDS_MAX])
