"""Deployment bundles: verified builds, a portable wheelhouse, checksums and an installer for
offline clinic laptops (`globmed-edge bundle`; docs/bundles.md)."""
