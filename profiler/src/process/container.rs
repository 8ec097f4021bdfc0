//! The container a process runs in, from its `/proc/PID/cgroup`: the
//! 64-hex-digit id that Docker, containerd (incl. Kubernetes), CRI-O and
//! Podman put in the cgroup path, e.g. `docker-<id>.scope`,
//! `cri-containerd-<id>.scope`, `/docker/<id>` or `/kubepods/.../<id>`.

/// The container id in cgroup file contents, if any.
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        // hierarchy-ID:controllers:path
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find_map(id_in_segment)
    })
}

fn id_in_segment(segment: &str) -> Option<String> {
    let s = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = s.rsplit(['-', ':']).next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The container id of `pid`, if it runs in one.
pub fn of_pid(pid: u32) -> Option<String> {
    container_id(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f0cc1a2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f";

    #[test]
    fn finds_ids_of_common_runtimes() {
        for cgroup in [
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!("12:pids:/docker/{ID}\n11:cpu:/docker/{ID}\n"),
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-{ID}.scope\n"
            ),
            format!("0::/kubepods/besteffort/pod8d9e/{ID}\n"),
            format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            format!("0::/kubepods.slice/crio-{ID}.scope\n"),
        ] {
            assert_eq!(container_id(&cgroup).as_deref(), Some(ID), "{cgroup}");
        }
    }

    #[test]
    fn hosts_have_none() {
        assert_eq!(
            container_id("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
        assert_eq!(container_id("0::/\n"), None);
        assert_eq!(container_id(""), None);
        // 63 hex digits is not an id.
        assert_eq!(container_id(&format!("0::/docker/{}\n", &ID[1..])), None);
    }
}
