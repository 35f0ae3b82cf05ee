"""The review UI: sessions, CSRF, server-side charts; templates/ and static/ ship in the package."""
