//! Kernel struct offsets from the kernel's BTF, read at load time: Rust BPF
//! programs have no CO-RE relocations, so the daemon resolves the offsets
//! they need (today `task_struct.thread.fsbase`, the thread pointer Go keeps
//! `g` under) and passes them in the program's configuration.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use btf_rs::{Btf, Type};

/// Byte offset of the member at `path` (e.g. `["thread", "fsbase"]`) in
/// struct `name`, looking through anonymous struct and union members.
pub fn member_offset(btf: &Btf, name: &str, path: &[&str]) -> Result<u32> {
    let ty = btf
        .resolve_types_by_name(name)
        .with_context(|| format!("no type {name} in BTF"))?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(_)))
        .ok_or_else(|| anyhow!("{name} is not a struct in BTF"))?;
    let mut offset_bits = 0u32;
    let mut current = ty;
    for (depth, field) in path.iter().enumerate() {
        let (bits, member_type) = find_member(btf, &current, field)
            .with_context(|| format!("{name}.{} has no member {field}", path[..depth].join(".")))?;
        offset_bits += bits;
        current = member_type;
    }
    if !offset_bits.is_multiple_of(8) {
        bail!("{name}.{} is a bit field", path.join("."));
    }
    Ok(offset_bits / 8)
}

/// Strips typedefs and qualifiers.
fn resolve(btf: &Btf, mut ty: Type) -> Result<Type> {
    for _ in 0..16 {
        match &ty {
            Type::Typedef(_)
            | Type::Volatile(_)
            | Type::Const(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => {
                ty = btf
                    .resolve_chained_type(ty.as_btf_type().expect("chained types are BTF types"))?;
            }
            _ => return Ok(ty),
        }
    }
    bail!("typedef chain too long")
}

/// (bit offset, type) of member `field` of struct/union `ty`, searching
/// anonymous members too.
fn find_member(btf: &Btf, ty: &Type, field: &str) -> Result<(u32, Type)> {
    let (Type::Struct(s) | Type::Union(s)) = resolve(btf, ty.clone())? else {
        bail!("not a struct or union");
    };
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let member_type = resolve(btf, btf.resolve_chained_type(m)?)?;
        if name == field {
            return Ok((m.bit_offset(), member_type));
        }
        if name.is_empty()
            && matches!(member_type, Type::Struct(_) | Type::Union(_))
            && let Ok((bits, t)) = find_member(btf, &member_type, field)
        {
            return Ok((m.bit_offset() + bits, t));
        }
    }
    bail!("no member {field}")
}

/// `task_struct.thread.fsbase` (x86-64), or `None` where it does not exist.
pub fn task_fsbase(path: &Path) -> Result<Option<u32>> {
    let btf =
        Btf::from_file(path).with_context(|| format!("cannot parse BTF {}", path.display()))?;
    if !cfg!(target_arch = "x86_64") {
        return Ok(None);
    }
    member_offset(&btf, "task_struct", &["thread", "fsbase"]).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_task_struct_members_in_this_kernel() {
        let path = Path::new(crate::config::DEFAULT_BTF);
        if !path.exists() {
            eprintln!("SKIPPED: no {}", path.display());
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let fsbase = member_offset(&btf, "task_struct", &["thread", "fsbase"]).unwrap();
        let thread = member_offset(&btf, "task_struct", &["thread"]).unwrap();
        assert!(
            fsbase > thread && fsbase < thread + 256,
            "{thread} {fsbase}"
        );
        // `pid` sits inside task_struct at a plausible place; `tgid` follows it.
        let pid = member_offset(&btf, "task_struct", &["pid"]).unwrap();
        assert_eq!(
            member_offset(&btf, "task_struct", &["tgid"]).unwrap(),
            pid + 4
        );
        assert!(member_offset(&btf, "task_struct", &["no_such_member"]).is_err());
        assert!(member_offset(&btf, "no_such_struct", &["x"]).is_err());
        assert_eq!(task_fsbase(path).unwrap(), Some(fsbase));
    }
}
