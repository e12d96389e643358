//! Fuzz every checked view: whatever `new_checked` accepts, every accessor and setter
//! must work without panicking (the views' whole promise).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsknet_dataplane::packet::{arp, ethernet, icmp, ipv4};

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();

    if let Ok(mut f) = ethernet::Frame::new_checked(&mut buf[..]) {
        let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload().len());
        f.set_dst_addr(f.src_addr());
        f.set_ethertype(f.ethertype());
        let _ = f.payload_mut().len();
    }

    if let Ok(mut p) = arp::Packet::new_checked(&mut buf[..]) {
        let _ = (
            p.hardware_type(),
            p.protocol_type(),
            p.hardware_len(),
            p.protocol_len(),
        );
        let _ = (
            p.operation(),
            p.is_ethernet_ipv4(),
            p.target_hardware_addr(),
        );
        let (sha, spa, tpa) = (
            p.sender_hardware_addr(),
            p.sender_protocol_addr(),
            p.target_protocol_addr(),
        );
        p.set_operation(arp::OP_REPLY);
        p.set_sender_hardware_addr(sha);
        p.set_sender_protocol_addr(tpa);
        p.set_target_hardware_addr(sha);
        p.set_target_protocol_addr(spa);
    }

    if let Ok(mut p) = ipv4::Packet::new_checked(&mut buf[..]) {
        let _ = (
            p.version(),
            p.dscp_ecn(),
            p.ident(),
            p.frag_offset(),
            p.more_frags(),
        );
        let _ = (
            p.is_unfragmented(),
            p.protocol(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
        );
        let _ = (p.header().len(), p.payload().len());
        let verified = p.verify_checksum();
        if p.ttl() > 1 {
            p.decrement_ttl();
            assert_eq!(
                p.verify_checksum(),
                verified,
                "TTL decrement changed checksum validity"
            );
        }
        let _ = p.payload_mut().len();
        p.fill_checksum();
        assert!(p.verify_checksum());
    }

    if let Ok(mut p) = icmp::Packet::new_checked(&mut buf[..]) {
        let _ = (
            p.msg_type(),
            p.msg_code(),
            p.checksum(),
            p.echo_ident(),
            p.echo_seq_no(),
        );
        let _ = p.data().len();
        let verified = p.verify_checksum();
        if p.msg_type() == icmp::msg_type::ECHO_REQUEST {
            p.make_echo_reply();
            assert_eq!(
                p.verify_checksum(),
                verified,
                "echo reply changed checksum validity"
            );
        }
        p.fill_checksum();
        assert!(p.verify_checksum());
    }
});
