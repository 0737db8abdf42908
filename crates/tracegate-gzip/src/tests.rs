use std::io::{Read, Write};

use bytes::Bytes;
use proptest::prelude::*;

use crate::{gunzip, splice, splice_segments, GunzipError, Member, Piece};

fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A member whose deflate stream ends as Go's compress/flate ends it: a
/// sync-flushed body, then an empty stored block marked final.
fn gzip_go_style(data: &[u8], level: u32) -> Vec<u8> {
    let mut compress = flate2::Compress::new(flate2::Compression::new(level), false);
    let mut deflated = Vec::with_capacity(data.len() + 64);
    compress
        .compress_vec(data, &mut deflated, flate2::FlushCompress::Sync)
        .unwrap();
    assert_eq!(compress.total_in() as usize, data.len());
    deflated.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// What a decoder that reads only the first member makes of `gz`, and
/// that it left nothing unread.
fn single_member_gunzip(gz: &[u8]) -> Vec<u8> {
    let mut decoder = flate2::bufread::GzDecoder::new(gz);
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).unwrap();
    assert!(decoder.into_inner().is_empty(), "bytes after the member");
    out
}

fn multi_member_gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The one member of a body, as the receiver records it.
fn member(gz: Vec<u8>) -> Member {
    let body = Bytes::from(gz);
    let mut gunzipped = gunzip(&body, 64 << 20).unwrap();
    assert_eq!(gunzipped.members.len(), 1);
    gunzipped.members.remove(0).1
}

/// OTLP-like data: repetitive, with some noise.
fn spans(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        match (x >> 60) % 4 {
            0 => out.extend_from_slice(b"\x0a\x10service.name\x12\x08checkout"),
            1 => out.extend_from_slice(&x.to_le_bytes()),
            2 => out.extend_from_slice(b"http.method GET http.route /api/v1/orders"),
            _ => out.push((x >> 24) as u8),
        }
    }
    out.truncate(len);
    out
}

#[derive(Debug, Clone)]
enum Part {
    Plain(usize),
    /// A member of that many bytes at that level; Go's ending when true.
    Member(usize, u32, bool),
}

fn part() -> impl Strategy<Value = Part> {
    prop_oneof![
        (0usize..3000).prop_map(Part::Plain),
        (0usize..200_000, 0u32..=9, any::<bool>()).prop_map(|(n, l, go)| Part::Member(n, l, go)),
        (0usize..300, 0u32..=9, any::<bool>()).prop_map(|(n, l, go)| Part::Member(n, l, go)),
    ]
}

fn check(parts: &[Part], level: u32, seed: u64) {
    let mut want = Vec::new();
    let mut datas = Vec::new();
    let mut members = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let (n, gz) = match *part {
            Part::Plain(n) => (n, None),
            Part::Member(n, level, go) => (n, Some((level, go))),
        };
        let data = spans(seed + i as u64, n);
        want.extend_from_slice(&data);
        members.push(gz.map(|(level, go)| {
            member(if go {
                gzip_go_style(&data, level)
            } else {
                gzip(&data, level)
            })
        }));
        datas.push(data);
    }
    let pieces: Vec<Piece<'_>> = datas
        .iter()
        .zip(&members)
        .map(|(data, member)| match member {
            Some(m) => Piece::Member(m),
            None => Piece::Plain(data),
        })
        .collect();
    let spliced = splice(&pieces, level);
    let segments = splice_segments(&pieces, level);
    assert!(segments.iter().all(|s| !s.is_empty()));
    assert_eq!(segments.concat(), spliced);
    assert_eq!(single_member_gunzip(&spliced), want);
    assert_eq!(multi_member_gunzip(&spliced), want);
    let again = gunzip(&Bytes::from(spliced), want.len()).unwrap();
    assert_eq!(again.data, want);
    assert_eq!(again.members.len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn spliced_members_decode_to_the_concatenation_with_any_gzip_reader(
        parts in prop::collection::vec(part(), 0..8),
        level in 1u32..=6,
        seed in any::<u64>(),
    ) {
        check(&parts, level, seed);
    }
}

#[test]
fn every_ending_bit_position_is_realigned() {
    // Member sizes from 0 to 80 bytes at several levels end their deflate
    // streams at every bit offset within a byte.
    let mut ends = std::collections::HashSet::new();
    for n in 0..80 {
        for level in [0, 1, 6, 9] {
            let m = member(gzip(&spans(n as u64, n), level));
            ends.insert(m.end % 8);
            check(
                &[Part::Member(n, level, false), Part::Member(n, level, false)],
                1,
                n as u64,
            );
        }
    }
    assert_eq!(ends.len(), 8, "{ends:?}");
}

#[test]
fn one_member_alone_and_nothing_at_all() {
    check(&[Part::Member(100_000, 6, false)], 1, 7);
    check(&[], 1, 7);
    check(&[Part::Plain(0), Part::Member(0, 6, true)], 1, 7);
}

#[test]
fn a_multi_member_body_records_each_member_at_its_offset() {
    let a = spans(1, 5000);
    let b = spans(2, 70_000);
    let mut body = gzip(&a, 6);
    body.extend(gzip_go_style(&b, 1));
    body.extend(gzip(&[], 9));
    let got = gunzip(&Bytes::from(body), 1 << 20).unwrap();
    assert_eq!(got.data, [&a[..], &b[..]].concat());
    let at: Vec<(usize, usize)> = got.members.iter().map(|(at, m)| (*at, m.len())).collect();
    assert_eq!(at, [(0, 5000), (5000, 70_000), (75_000, 0)]);
    let pieces: Vec<Piece<'_>> = got.members.iter().map(|(_, m)| Piece::Member(m)).collect();
    assert_eq!(single_member_gunzip(&splice(&pieces, 1)), got.data);
}

#[test]
fn corrupt_and_oversized_bodies_are_refused() {
    let data = spans(3, 50_000);
    let good = gzip(&data, 6);
    assert_eq!(
        gunzip(&Bytes::from(good.clone()), data.len() - 1).err(),
        Some(GunzipError::TooLarge)
    );
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 1;
    let truncated = good[..good.len() - 3].to_vec();
    for body in [bad_crc, truncated, Vec::new(), b"not gzip".to_vec()] {
        assert!(matches!(
            gunzip(&Bytes::from(body), 1 << 20),
            Err(GunzipError::Corrupt(_))
        ));
    }
}

/// Whether `segment` lies inside `buffer` (shares its memory).
fn inside(segment: &[u8], buffer: &[u8]) -> bool {
    let (start, end) = (segment.as_ptr() as usize, buffer.as_ptr() as usize);
    start >= end && start + segment.len() <= end + buffer.len()
}

#[test]
fn arrived_blocks_are_sent_as_the_bytes_that_arrived() {
    // Several blocks at level 6, so most of the stream comes before the
    // last block.
    let data = spans(4, 400_000);
    let arrived = member(gzip(&data, 6));
    let pieces = [
        Piece::Plain(b"before"),
        Piece::Member(&arrived),
        Piece::Plain(b"after"),
    ];
    let segments = splice_segments(&pieces, 1);
    let shared: usize = segments
        .iter()
        .filter(|s| inside(s, &arrived.data))
        .map(|s| s.len())
        .sum();
    assert!(
        shared > arrived.data.len() / 2,
        "{shared} of {} bytes sent as they arrived",
        arrived.data.len()
    );
    let want = [&b"before"[..], &data, b"after"].concat();
    assert_eq!(single_member_gunzip(&segments.concat()), want);
}

#[test]
fn consecutive_plain_pieces_compress_as_one_run() {
    // The second half repeats the first: with one window it costs next to
    // nothing; compressed apart it would cost as much again.
    let half = spans(5, 20_000);
    let whole = [&half[..], &half[..]].concat();
    let alone = splice(&[Piece::Plain(&half)], 1).len();
    let two = splice(&[Piece::Plain(&half), Piece::Plain(&half)], 1);
    assert!(two.len() < alone * 5 / 4, "{} vs {alone}", two.len());
    assert_eq!(single_member_gunzip(&two), whole);
    // After a member the window starts afresh (nothing may refer back
    // across it), and the data still reads back.
    let m = member(gzip(b"between", 6));
    let apart = splice(
        &[Piece::Plain(&half), Piece::Member(&m), Piece::Plain(&half)],
        1,
    );
    assert!(apart.len() > alone * 3 / 2, "{} vs {alone}", apart.len());
    assert_eq!(
        single_member_gunzip(&apart),
        [&half[..], b"between", &half[..]].concat()
    );
}

#[test]
fn a_body_that_states_its_size_is_inflated_without_regrowth() {
    let data = spans(6, 300_000);
    let got = gunzip(&Bytes::from(gzip(&data, 6)), 64 << 20).unwrap();
    assert_eq!(got.data, data);
    // The stated size and the one byte that lets inflate read the trailer.
    assert_eq!(got.data.capacity(), data.len() + 1);
}
