//! Registry pulls through `oci-client`.

use super::{Image, OciError, OciOptions};

pub fn pull(_opts: &OciOptions, image: &str, _reference: &oci_client::Reference) -> Result<Image, OciError> {
    Err(OciError::Registry { image: image.to_owned(), message: "registry pulls are not built yet".into() })
}
