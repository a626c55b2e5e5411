"""GOT-10k training sequences: `<root>/train/list.txt` naming the sequence folders.

Each folder (`GOT-10k_Train_000001`, ...) holds the frames `00000001.jpg, ...`,
`groundtruth.txt` (one `xmin,ymin,w,h` line per frame), `absence.label` (one 0/1
per line) and `cover.label` (one 0-8 per line: the visible fraction in bins, 0
for none). As pytracking counts it, a frame is visible when the target is not
absent, its cover is above 0 and its box has w > 0 and h > 0; every other frame
is flagged absent. GOT-10k has no sentences.
"""

from pathlib import Path

import numpy as np

from snlt_fast.datasets._text import AnnotationError, read_boxes, read_flags, read_names, read_text
from snlt_fast.datasets.base import NumberedFrames, Video
from snlt_fast.datasets.lazy import LazyDataset

COVER_BINS = frozenset(str(bin) for bin in range(9))


class GOT10k(LazyDataset):
    """GOT-10k's training sequences, each read from its folder when indexed.

    root: the GOT-10k folder (holding `train/list.txt`) or its `train` folder
    (holding `list.txt`); subset: None for every listed sequence, a name list
    file or a list of names (pytracking's 7934/1401 train/val partition, say).
    Nothing but the list is read at load: 9335 sequences would take long.
    """

    def __init__(self, root, subset=None):
        root = Path(root)
        candidates = [folder for folder in (root / "train", root) if (folder / "list.txt").is_file()]
        if not candidates:
            raise FileNotFoundError(
                f"GOT-10k sequence list not found: {root / 'train' / 'list.txt'} (nor {root / 'list.txt'})"
            )
        self.folder = candidates[0]
        listed = read_names(self.folder / "list.txt", "GOT-10k sequence list")
        if subset is None:
            self.names = listed
        else:
            self.names = list(subset) if isinstance(subset, (list, tuple)) else read_names(subset, "GOT-10k name list")
            unknown = sorted(set(self.names) - set(listed))
            if unknown:
                raise KeyError(
                    f"GOT-10k subset names {unknown[0]!r}, which {self.folder / 'list.txt'} lacks ({len(unknown)} such names)"
                )
        super().__init__("GOT-10k-train", len(self.names))

    def _video(self, index):
        return read_sequence(self.folder / self.names[index])


def read_sequence(folder):
    """One GOT-10k sequence folder as a Video, its absent flags from the labels and the boxes."""
    box_file = folder / "groundtruth.txt"
    boxes = read_boxes(box_file, "GOT-10k ground truth")
    absence_file, cover_file = folder / "absence.label", folder / "cover.label"
    absence = _one_per_box(read_flags(absence_file, "GOT-10k absence label"), absence_file, box_file, len(boxes))
    cover = _one_per_box(_read_cover(cover_file), cover_file, box_file, len(boxes))
    visible = ~absence & (cover > 0) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    return Video(folder.name, boxes, NumberedFrames(folder, 1, len(boxes), 8), ~visible, source=str(folder))


def _read_cover(path):
    """(n,) int cover bins, 0 to 8, one a line."""
    cover = []
    for number, line in enumerate(read_text(path, "GOT-10k cover label").splitlines(), start=1):
        token = line.strip()
        if not token:
            continue
        if token not in COVER_BINS:
            raise AnnotationError(f"{path}:{number}: expected a cover bin 0 to 8, got {token!r}")
        cover.append(int(token))
    return np.array(cover, dtype=np.int64)


def _one_per_box(values, path, box_file, count):
    """`values`, which must hold one label per box of `box_file`."""
    if len(values) != count:
        raise AnnotationError(f"{path}: {len(values)} labels for {count} ground-truth boxes in {box_file}")
    return values
