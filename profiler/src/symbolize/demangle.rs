//! Rust (legacy and v0) and C++ (Itanium) demangling, with the crates the
//! toolchains themselves use (`rustc-demangle`, `cpp_demangle`).

/// The human-readable form of `name`, or `None` if it is not mangled.
pub fn demangle(name: &str) -> Option<String> {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        // `{:#}` drops the legacy hash suffix.
        return Some(format!("{d:#}"));
    }
    if name.starts_with("_Z") {
        return cpp_demangle::Symbol::new(name).ok()?.demangle().ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_rust_legacy_and_v0() {
        assert_eq!(
            demangle("_ZN4core3fmt5write17h0123456789abcdefE").as_deref(),
            Some("core::fmt::write")
        );
        assert_eq!(
            demangle("_RNvCskwGfYPst2Cb_3foo16example_function").as_deref(),
            Some("foo::example_function")
        );
    }

    #[test]
    fn demangles_cpp() {
        assert_eq!(
            demangle("_ZNSt6vectorIiSaIiEE9push_backERKi").as_deref(),
            Some("std::vector<int, std::allocator<int> >::push_back(int const&)")
        );
        assert_eq!(demangle("_Z3fooi").as_deref(), Some("foo(int)"));
    }

    #[test]
    fn leaves_plain_names() {
        assert_eq!(demangle("main"), None);
        assert_eq!(demangle("__libc_start_main"), None);
    }
}
