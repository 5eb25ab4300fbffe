"""The transform the chaos campaign deploys mid-run before its reprocess: the default page
view with device classes in upper case, and a version of its own. The verdict checks
every stored row against it (``verdict.check_transform``)."""
from __future__ import annotations

from shardline.transforms.page_views import page_view

VERSION = "chaos-v2"


def page_view_v2(event: dict) -> dict:
    row = page_view(event)
    row["device_class"] = row["device_class"].upper()
    return row
