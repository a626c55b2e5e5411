"""The zip archives of ../shared/data, extracted into a temporary folder for a test module."""

import zipfile

import pytest
from conftest import SHARED_DATA


def extract_shared(tmp_path_factory, *archives):
    """Extract the archives (paths relative to ../shared/data) into one new folder; skip when one is absent."""
    paths = [SHARED_DATA / archive for archive in archives]
    for path in paths:
        if not path.is_file():
            pytest.skip(f"real data not found at {path}")
    folder = tmp_path_factory.mktemp("shared_archives")
    for path in paths:
        with zipfile.ZipFile(path) as handle:
            handle.extractall(folder)
    return folder
