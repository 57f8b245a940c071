//! Release formats of a real rpixen image, checked with the tools their users run.
//! Needs: xz-utils, bmap-tools, dosfstools, python3-jsonschema (apt) and spdx-tools (pip).

mod image;
mod release_files;
mod sbom;
