//! Fuzz every checked view (Ethernet, ARP, IPv4 and its quoted header, ICMP, the port
//! pair, UDP, TCP, SCTP, VXLAN): whatever `new_checked` accepts, every accessor and
//! setter must work without panicking (the views' whole promise), and the lengths a
//! view reports stay within what it checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xsknet_dataplane::packet::{arp, ethernet, icmp, ipv4, ports, sctp, tcp, udp, vxlan};

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

    if let Ok(q) = ipv4::Quoted::new_checked(&buf[..]) {
        let _ = (q.header_len(), q.protocol(), q.frag_offset());
        let _ = (q.src_addr(), q.dst_addr(), q.payload().len());
    }

    if let Ok(p) = ports::Ports::new_checked(&buf[..]) {
        let _ = (p.src_port(), p.dst_port());
    }

    if let Ok(mut p) = udp::Packet::new_checked(&mut buf[..]) {
        let _ = (p.src_port(), p.dst_port(), p.len(), p.checksum());
        assert!(p.payload().len() + udp::HEADER_LEN == p.len());
        p.set_src_port(p.dst_port());
        p.set_checksum(0);
        let _ = p.payload_mut().len();
        let len = p.len() as u16;
        p.set_len(len);
    }

    if let Ok(mut p) = tcp::Packet::new_checked(&mut buf[..]) {
        let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number());
        let _ = (p.flags(), p.syn(), p.ack(), p.fin(), p.rst());
        let _ = (p.window_len(), p.checksum(), p.urgent_at());
        let hl = p.header_len();
        assert!((tcp::MIN_HEADER_LEN..=tcp::MAX_HEADER_LEN).contains(&hl));
        let _ = (p.options().len(), p.payload().len());
        p.set_src_port(1);
        p.set_seq_number(2);
        p.set_ack_number(3);
        p.set_flags(p.flags() ^ tcp::flags::SYN);
        p.set_window_len(4);
        p.set_checksum(5);
        p.set_urgent_at(6);
        p.set_header_len(hl);
        assert!(tcp::Packet::new_checked(p.into_inner()).is_ok());
    }

    if let Ok(mut p) = sctp::Packet::new_checked(&mut buf[..]) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.verification_tag(),
            p.checksum(),
        );
        let _ = (p.first_chunk_type(), p.first_chunk_flags());
        assert_eq!(
            p.first_chunk_value().len() + sctp::CHUNK_HEADER_LEN,
            p.first_chunk_len()
        );
        p.set_src_port(1);
        p.set_verification_tag(2);
        p.set_checksum(3);
        p.set_first_chunk_type(sctp::chunk_type::ABORT);
        p.set_first_chunk_flags(0);
    }

    if let Ok(mut p) = vxlan::Packet::new_checked(&mut buf[..]) {
        assert_eq!(p.flags(), vxlan::FLAG_I);
        let vni = p.vni();
        assert!(vni <= vxlan::VNI_MAX);
        let _ = p.payload().len();
        p.set_vni(vni ^ 1);
        p.fill(vni);
        let _ = p.payload_mut().len();
        let again = vxlan::Packet::new_checked(p.into_inner()).expect("fill writes a valid header");
        assert_eq!(again.vni(), vni);
    } else if buf.len() >= vxlan::HEADER_LEN {
        // Whatever was there, fill makes a header the view accepts.
        let vni = u32::from_be_bytes([0, buf[4], buf[5], buf[6]]);
        vxlan::Packet::new_unchecked(&mut buf[..]).fill(vni);
        assert_eq!(
            vxlan::Packet::new_checked(&buf[..]).map(|p| p.vni()),
            Ok(vni)
        );
    }
});
