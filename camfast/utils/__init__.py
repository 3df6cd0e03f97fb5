"""Utilities shared by every layer: atomic writes (:mod:`camfast.utils.io`)."""
