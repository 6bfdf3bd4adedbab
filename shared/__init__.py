"""Below every layer, like i18n/: what robot/ and tasks/ both need and neither owns.
Standard library only; imports nothing of the project."""
