//! Kernel struct offsets from the kernel's BTF, read at load time: Rust BPF
//! programs have no CO-RE relocations, so the daemon resolves the offsets
//! they need (today `task_struct.thread.fsbase`, the thread pointer Go keeps
//! `g` under) and passes them in the program's configuration.
//!
//! Hand-written rather than done with `btf-rs` (which the tests use as the
//! reference): that crate parses all ~150,000 types of the kernel's BTF into
//! owned values, about 280 ms here, to answer one question at start-up,
//! where the profiler aims at half a second to its first sample. This
//! reader makes one pass over the raw type section, recording where each
//! type starts, then looks at the few types the question touches: a few
//! milliseconds.

use std::path::Path;

use anyhow::{Context, Result, bail};

const MAGIC: u16 = 0xEB9F;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A parsed-enough BTF blob (little-endian, as every kernel we load on).
pub struct KernelBtf {
    data: Vec<u8>,
    types: usize,
    strings: usize,
    strings_len: usize,
    /// Byte position (in `data`) of each type, by id; id 0 is void.
    starts: Vec<u32>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl KernelBtf {
    /// Reads and indexes the BTF at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(data).with_context(|| format!("malformed BTF {}", path.display()))
    }

    /// Indexes BTF bytes.
    pub fn parse(data: Vec<u8>) -> Result<Self> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            bail!("not BTF (bad magic)");
        }
        let hdr = u32_at(&data, 4).context("header")? as usize;
        let word = |i: usize| {
            u32_at(&data, 4 + 4 * i)
                .map(|v| v as usize)
                .context("header")
        };
        let (type_off, type_len, str_off, str_len) = (word(1)?, word(2)?, word(3)?, word(4)?);
        let types = hdr + type_off;
        let strings = hdr + str_off;
        if types + type_len > data.len() || strings + str_len > data.len() {
            bail!("sections past the end");
        }
        let mut starts = vec![0u32];
        let mut at = types;
        while at < types + type_len {
            let info = u32_at(&data, at + 4).context("truncated type")?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            starts.push(u32::try_from(at).context("BTF too large")?);
            at += 12 + extra;
        }
        if at != types + type_len {
            bail!("the last type runs past the type section");
        }
        Ok(Self {
            data,
            types,
            strings,
            strings_len: str_len,
            starts,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let start = self.strings + off as usize;
        let end = self.strings + self.strings_len;
        let s = self.data.get(start..end).unwrap_or_default();
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    /// (name offset, kind, vlen, kind_flag, size_or_type, position) of `id`.
    fn ty(&self, id: u32) -> Option<(u32, u32, usize, bool, u32, usize)> {
        let at = *self.starts.get(id as usize)? as usize;
        if id == 0 || at < self.types {
            return None;
        }
        let info = u32_at(&self.data, at + 4)?;
        Some((
            u32_at(&self.data, at)?,
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
            u32_at(&self.data, at + 8)?,
            at,
        ))
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let (_, kind, _, _, next, _) = self.ty(id)?;
            match kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = next
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// (bit offset, type id) of member `field` of struct/union `id`,
    /// looking through anonymous struct and union members.
    fn member(&self, id: u32, field: &[u8], depth: u32) -> Option<(u32, u32)> {
        let (_, kind, vlen, kind_flag, _, at) = self.ty(self.resolve(id)?)?;
        if !matches!(kind, KIND_STRUCT | KIND_UNION) || depth > 8 {
            return None;
        }
        for i in 0..vlen {
            let m = at + 12 + 12 * i;
            let (name, ty, off) = (
                u32_at(&self.data, m)?,
                u32_at(&self.data, m + 4)?,
                u32_at(&self.data, m + 8)?,
            );
            let bits = if kind_flag { off & 0xff_ffff } else { off };
            let name = self.name(name);
            if name == field {
                return Some((bits, ty));
            }
            if name.is_empty()
                && let Some((inner, t)) = self.member(ty, field, depth + 1)
            {
                return Some((bits + inner, t));
            }
        }
        None
    }

    /// Byte offset of the member at `path` (e.g. `["thread", "fsbase"]`) in
    /// struct `name`.
    pub fn member_offset(&self, name: &str, path: &[&str]) -> Result<u32> {
        let id = (1..self.starts.len() as u32)
            .find(|&id| {
                self.ty(id).is_some_and(|(n, kind, ..)| {
                    kind == KIND_STRUCT && self.name(n) == name.as_bytes()
                })
            })
            .with_context(|| format!("no struct {name} in BTF"))?;
        let (mut bits, mut ty) = (0u32, id);
        for (depth, field) in path.iter().enumerate() {
            let (b, t) = self.member(ty, field.as_bytes(), 0).with_context(|| {
                format!("{name}.{} has no member {field}", path[..depth].join("."))
            })?;
            bits += b;
            ty = t;
        }
        if !bits.is_multiple_of(8) {
            bail!("{name}.{} is a bit field", path.join("."));
        }
        Ok(bits / 8)
    }
}

/// `task_struct.thread.fsbase` (x86-64), or `None` where it does not exist.
pub fn task_fsbase(path: &Path) -> Result<Option<u32>> {
    if !cfg!(target_arch = "x86_64") {
        return Ok(None);
    }
    KernelBtf::read(path)?
        .member_offset("task_struct", &["thread", "fsbase"])
        .map(Some)
}

#[cfg(test)]
mod tests {
    use btf_rs::{Btf, Type};

    use super::*;

    /// The same answer from `btf-rs`, the reference reader.
    fn reference(btf: &Btf, name: &str, path: &[&str]) -> u32 {
        fn resolve(btf: &Btf, mut ty: Type) -> Type {
            while matches!(
                ty,
                Type::Typedef(_) | Type::Volatile(_) | Type::Const(_) | Type::Restrict(_)
            ) {
                ty = btf.resolve_chained_type(ty.as_btf_type().unwrap()).unwrap();
            }
            ty
        }
        fn find(btf: &Btf, ty: &Type, field: &str) -> Option<(u32, Type)> {
            let (Type::Struct(s) | Type::Union(s)) = resolve(btf, ty.clone()) else {
                return None;
            };
            for m in &s.members {
                let n = btf.resolve_name(m).unwrap_or_default();
                let t = resolve(btf, btf.resolve_chained_type(m).unwrap());
                if n == field {
                    return Some((m.bit_offset(), t));
                }
                if n.is_empty()
                    && let Some((b, t)) = find(btf, &t, field)
                {
                    return Some((m.bit_offset() + b, t));
                }
            }
            None
        }
        let mut ty = btf
            .resolve_types_by_name(name)
            .unwrap()
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .unwrap();
        let mut bits = 0;
        for f in path {
            let (b, t) = find(btf, &ty, f).unwrap();
            bits += b;
            ty = t;
        }
        bits / 8
    }

    #[test]
    fn agrees_with_btf_rs_on_this_kernel() {
        let path = Path::new(crate::config::DEFAULT_BTF);
        if !path.exists() {
            eprintln!("SKIPPED: no {}", path.display());
            return;
        }
        let ours = KernelBtf::read(path).unwrap();
        let theirs = Btf::from_file(path).unwrap();
        for (name, member) in [
            ("task_struct", &["thread", "fsbase"][..]),
            ("task_struct", &["pid"]),
            ("task_struct", &["tgid"]),
            ("task_struct", &["mm"]),
            ("mm_struct", &["start_stack"]),
        ] {
            assert_eq!(
                ours.member_offset(name, member).unwrap(),
                reference(&theirs, name, member),
                "{name}.{member:?}"
            );
        }
        assert!(
            ours.member_offset("task_struct", &["no_such_member"])
                .is_err()
        );
        assert!(ours.member_offset("no_such_struct", &["x"]).is_err());
        assert_eq!(
            task_fsbase(path).unwrap(),
            Some(
                ours.member_offset("task_struct", &["thread", "fsbase"])
                    .unwrap()
            )
        );
    }

    #[test]
    fn rejects_malformed_btf() {
        assert!(KernelBtf::parse(b"not btf".to_vec()).is_err());
        let path = Path::new(crate::config::DEFAULT_BTF);
        if let Ok(mut data) = std::fs::read(path) {
            data.truncate(data.len() / 2);
            assert!(KernelBtf::parse(data).is_err());
        }
    }
}
