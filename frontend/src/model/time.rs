//! Times as the page shows them.

/// `HH:MM:SS`.
pub fn clock(hours: u32, minutes: u32, seconds: u32) -> String {
    format!("{hours:02}:{minutes:02}:{seconds:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn clock_pads() {
        assert_eq!(clock(7, 5, 0), "07:05:00");
    }
}
