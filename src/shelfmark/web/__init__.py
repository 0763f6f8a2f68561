"""The server-rendered web: the OPAC (`/`), the staff desk (`/desk`), login and logout."""
