//! Hostile input: raw TCP clients sending absurd or malformed PDUs. Each must end its own
//! association (A-ABORT or close) and leave the server serving others.

use std::time::Duration;

use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, UserVariableItem};
use dicom_ul::{Pdu, write_pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Reads until the server closes the connection (at most 3 s) and returns what it sent.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the server kept the connection open");
    out
}

fn associate_rq(max_pdu: u32) -> Vec<u8> {
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "HOSTILE".into(),
        called_ae_title: AE.into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.1.1".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(max_pdu)],
    });
    let mut buf = Vec::new();
    write_pdu(&mut buf, &rq).unwrap();
    buf
}

async fn echo_still_works(server: &Server) {
    let out = dcmtk("echoscu", &["-aec", AE, "127.0.0.1", &server.port()], 5).await;
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn associate_rq_with_absurd_pdu_length_is_aborted() {
    let server = start(|_| {}).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // A-ASSOCIATE-RQ declaring almost 4 GiB.
    s.write_all(&[0x01, 0, 0xFF, 0xFF, 0xFF, 0xF0, 0, 1, 0, 0])
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert!(
        got.is_empty() || got[0] == 0x07,
        "expected A-ABORT, got {got:?}"
    );
    echo_still_works(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_maximum_length_is_clamped_and_tiny_one_rejected() {
    let server = start(|_| {}).await;
    // u32::MAX as Maximum Length: accepted (we cap what we send).
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&associate_rq(u32::MAX)).await.unwrap();
    let mut head = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[0], 0x02, "A-ASSOCIATE-AC expected");
    drop(s);
    // 16 bytes as Maximum Length: nothing fits, rejected.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&associate_rq(16)).await.unwrap();
    let got = read_to_close(&mut s).await;
    assert_eq!(
        got.first(),
        Some(&0x03),
        "A-ASSOCIATE-RJ expected, got {got:?}"
    );
    echo_still_works(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pdata_with_huge_declared_length_is_aborted() {
    let server = start(|_| {}).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&associate_rq(16384)).await.unwrap();
    let mut head = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[0], 0x02);
    let len = u32::from_be_bytes(head[2..6].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; len];
    s.read_exact(&mut rest).await.unwrap();
    // P-DATA-TF declaring 2 GiB, then a little of it.
    s.write_all(&[0x04, 0, 0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 10, 1, 3])
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert_eq!(got.first(), Some(&0x07), "A-ABORT expected, got {got:?}");
    echo_still_works(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_truncated_pdus_end_only_their_association() {
    let server = start(|_| {}).await;
    // Garbage PDU type with a small length.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&[0x42, 0, 0, 0, 0, 4, 1, 2, 3, 4])
        .await
        .unwrap();
    read_to_close(&mut s).await;
    // An A-ASSOCIATE-RQ whose items claim more than the PDU holds.
    let mut rq = associate_rq(16384);
    let n = rq.len();
    rq[n - 6] = 0xFF;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&rq).await.unwrap();
    // dicom-ul's item reader stops at the bad item: the server answers (AC, RJ or A-ABORT).
    let mut first = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut first)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Ok(1))), "no answer: {r:?}");
    drop(s);
    // A command whose element declares more than the command set holds.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&associate_rq(16384)).await.unwrap();
    let mut head = [0u8; 6];
    s.read_exact(&mut head).await.unwrap();
    let mut rest = vec![0u8; u32::from_be_bytes(head[2..6].try_into().unwrap()) as usize];
    s.read_exact(&mut rest).await.unwrap();
    let cmd = [0u8, 0, 0, 1, 0xF0, 0xFF, 0xFF, 0x0F, 1, 0];
    let mut pdu = vec![0x04, 0, 0, 0, 0, (cmd.len() + 6) as u8];
    pdu.extend_from_slice(&((cmd.len() + 2) as u32).to_be_bytes());
    pdu.extend_from_slice(&[1, 0x03]);
    pdu.extend_from_slice(&cmd);
    s.write_all(&pdu).await.unwrap();
    let got = read_to_close(&mut s).await;
    assert_eq!(got.first(), Some(&0x07), "A-ABORT expected, got {got:?}");
    // Half a PDU, then the client vanishes.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&associate_rq(16384)[..20]).await.unwrap();
    drop(s);
    echo_still_works(&server).await;
    server.stop().await;
}
