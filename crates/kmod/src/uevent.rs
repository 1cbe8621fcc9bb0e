//! Kernel uevents as they arrive on a `NETLINK_KOBJECT_UEVENT` socket:
//! `ACTION@DEVPATH\0KEY=VALUE\0KEY=VALUE\0...`.

/// The fields of a uevent that module loading and device discovery care about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: Option<String>,
    pub modalias: Option<String>,
    pub interface: Option<String>,
}

/// Parses one datagram. Returns `None` for anything that is not a kernel uevent (udev's own
/// `libudev` messages, truncated or garbage datagrams).
pub fn parse(datagram: &[u8]) -> Option<Uevent> {
    let mut fields = datagram.split(|b| *b == 0).filter(|f| !f.is_empty());
    let header = std::str::from_utf8(fields.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    if action.is_empty() || !devpath.starts_with('/') {
        return None;
    }
    let mut ev = Uevent {
        action: action.to_string(),
        devpath: devpath.to_string(),
        ..Default::default()
    };
    for field in fields {
        let Ok(text) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((key, value)) = text.split_once('=') else {
            continue;
        };
        match key {
            "SUBSYSTEM" => ev.subsystem = Some(value.to_string()),
            "MODALIAS" => ev.modalias = Some(value.to_string()),
            "INTERFACE" => ev.interface = Some(value.to_string()),
            _ => {}
        }
    }
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_uevent() {
        let msg = b"add@/devices/pci0000:00/0000:00:03.0/virtio0\0ACTION=add\0DEVPATH=/devices/pci0000:00/0000:00:03.0/virtio0\0SUBSYSTEM=virtio\0MODALIAS=virtio:d00000001v00001AF4\0SEQNUM=1000\0";
        let ev = parse(msg).unwrap();
        assert_eq!(ev.action, "add");
        assert_eq!(ev.subsystem.as_deref(), Some("virtio"));
        assert_eq!(ev.modalias.as_deref(), Some("virtio:d00000001v00001AF4"));
    }

    #[test]
    fn rejects_non_kernel_and_garbage() {
        assert!(parse(b"libudev\0\xfe\xed\xca\xfe").is_none());
        assert!(parse(b"").is_none());
        assert!(parse(b"\0\0\0").is_none());
        assert!(parse(b"add@relative\0").is_none());
        assert!(parse(&[0xff, b'@', b'/']).is_none());
        let ev = parse(b"change@/x\0\xff\xfe=1\0NOEQUALS\0MODALIAS=a\0").unwrap();
        assert_eq!(ev.modalias.as_deref(), Some("a"));
    }
}
