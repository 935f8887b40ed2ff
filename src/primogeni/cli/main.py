"""The ``primo`` command."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="primogeni")
def main() -> None:
    """PrimoGENI: build a model, request resources, deploy, run, watch, collect, tear down."""
