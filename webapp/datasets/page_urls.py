"""Filled in by the browsing pages."""

urlpatterns: list = []
