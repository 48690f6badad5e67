"""The aioquic backend: the only importer of aioquic."""
