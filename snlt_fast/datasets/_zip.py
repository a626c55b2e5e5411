"""Zip archives read in place: benchmark annotations and results are downloaded zipped
(`OTB100.json.zip`, `SiamRPN++_OTB100.zip`), and scoring needs only their text files.

A folder inside an archive is a `zipfile.Path`, which the text readers accept as
they accept a `pathlib.Path`; messages name files as `archive.zip/folder/file.txt`.
"""

import zipfile
from pathlib import Path, PurePosixPath

from snlt_fast.datasets._text import AnnotationError


def is_zip(path):
    """Whether `path` is a file that is, or claims by its name to be, a zip archive."""
    path = Path(path)
    return path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path))


def zip_folder(path):
    """The folder of a zip archive that holds its files: the one top-level folder when
    everything is in one (as `SiamRPN++/` in `SiamRPN++_OTB100.zip`), else the archive's root."""
    try:
        root = zipfile.Path(zipfile.ZipFile(path))
    except (zipfile.BadZipFile, OSError) as error:
        raise AnnotationError(f"{path}: not a readable zip archive, truncated or corrupted? ({error})") from None
    entries = list(root.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else root


def folder_name(folder):
    """A folder's name; an archive's root is named by the archive without `.zip`."""
    name = folder.name
    return name[: -len(".zip")] if isinstance(folder, zipfile.Path) and name.lower().endswith(".zip") else name


def unzipped_location(member, archive):
    """Where `member` (a zipfile.Path) would lie once `archive` is unzipped next to itself."""
    return Path(archive).parent / PurePosixPath(member.at)


def refuse_zip(path, what):
    """An AnnotationError for a zip given where only a folder is read."""
    if is_zip(path):
        raise AnnotationError(f"{path} is a zip archive; {what} is read from a folder: unzip it and pass the folder")
