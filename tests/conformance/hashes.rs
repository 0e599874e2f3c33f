//! The recorded hash, pinned on inputs where encodings matter (drizzle-compat.md 1.5, E8-E10).
//!
//! The expected values are not written here: they are computed at test time by node, exactly as
//! drizzle-orm's `readMigrationFiles` computes them (`readFileSync`, `toString()`, sha256 hex),
//! and also taken from the real `readMigrationFiles` of the pinned drizzle-orm. Both must agree
//! with the rows portcullis writes and with the rows `drizzle-kit migrate` writes. The chunks
//! drizzle-orm splits each file into must equal portcullis's split, chunk for chunk.

use crate::run::{self, Folder};
use crate::twin;
use crate::{kit, support};
use portcullis::source::split;

/// Files whose hash is pinned. Each is valid SQL once decoded, so both tools can apply it; the
/// BOM file comes last because drizzle-kit fails on it (see differences.rs): drizzle-kit applies
/// the others.
fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", b"".to_vec()),
        (
            "crlf",
            b"SELECT 1;\r\n--> statement-breakpoint\r\nSELECT 2;\r\n".to_vec(),
        ),
        ("lone_cr", b"SELECT 1;\rSELECT 2;\r".to_vec()),
        ("trailing_whitespace", b"SELECT 1;  \t\n\n   \n".to_vec()),
        (
            "emoji",
            "-- \u{1f680} \u{2713} \u{e9} \u{6f22}\u{5b57}\nSELECT '\u{1f980}';"
                .as_bytes()
                .to_vec(),
        ),
        ("only_marker", b"--> statement-breakpoint".to_vec()),
        // Invalid UTF-8, one kind per file so a disagreement names its kind. Node and Rust must
        // both replace each "maximal subpart" with one U+FFFD.
        ("latin1", b"-- caf\xe9\nSELECT 'na\xefve';".to_vec()),
        (
            "stray_continuations",
            b"-- \x80\xbf\x80\nSELECT 1;".to_vec(),
        ),
        ("ff_fe", b"-- \xff\xfe\nSELECT 1;".to_vec()),
        ("truncated_4_byte", b"-- \xf0\x9f\x98\nSELECT 1;".to_vec()),
        ("truncated_at_eof", b"SELECT 1; -- \xe2\x82".to_vec()),
        (
            "surrogate",
            b"-- \xed\xa0\x80 \xed\xbf\xbf\nSELECT 1;".to_vec(),
        ),
        (
            "overlong",
            b"-- \xc0\xaf \xe0\x80\xaf \xc1\xbf\nSELECT 1;".to_vec(),
        ),
        (
            "above_max",
            b"-- \xf4\x90\x80\x80 \xf5\x80 \xf8\x88\x80\x80\x80\nSELECT 1;".to_vec(),
        ),
        (
            "mixed_valid_invalid",
            "-- \u{e9}\u{1f680}"
                .bytes()
                .chain(*b"\xe2\x28\xa1 \xf0\x28\x8c\xbc\nSELECT 1;")
                .collect(),
        ),
        ("bom_crlf", b"\xef\xbb\xbfSELECT 1;\r\n".to_vec()),
    ]
}

#[test]
fn hashes_match_node_drizzle_orm_and_drizzle_kit() {
    let vectors = vectors();
    let mut f = Folder::new();
    for (i, (name, bytes)) in vectors.iter().enumerate() {
        f.add_raw(
            &format!("{i:04}_{name}"),
            &(1_700_000_000_000i64 + i as i64).to_string(),
            bytes,
        );
    }

    // What node says: crypto as readMigrationFiles does it, and readMigrationFiles itself.
    let node = kit::read_migrations(f.path());
    assert_eq!(node.len(), vectors.len());
    for (i, (n, (name, bytes))) in node.iter().zip(&vectors).enumerate() {
        assert_eq!(n.tag, format!("{i:04}_{name}"));
        assert_eq!(
            n.crypto_hash, n.drizzle_hash,
            "{name}: node crypto and drizzle-orm's readMigrationFiles disagree"
        );
        // drizzle's chunks are exactly portcullis's split of the lossily decoded text.
        let text = split::decode(bytes);
        let ours: Vec<&str> = split::split(&text).iter().map(|c| c.text).collect();
        assert_eq!(
            n.chunks, ours,
            "{name}: drizzle-orm split the file into other chunks than portcullis"
        );
    }

    // What portcullis records.
    let url = twin::fresh_db("conf_hashes");
    twin::portcullis_migrate(&url, f.path());
    let rows = run::rows(&url);
    let mut failures = Vec::new();
    for (i, ((name, _), n)) in vectors.iter().zip(&node).enumerate() {
        let (hash, created_at) = &rows[i];
        if hash != &n.crypto_hash {
            failures.push(format!(
                "{name}: portcullis recorded {hash}, node computes {}",
                n.crypto_hash
            ));
        }
        if created_at != &n.folder_millis {
            failures.push(format!(
                "{name}: portcullis recorded created_at {created_at}, drizzle-orm's folderMillis \
                 is {}",
                n.folder_millis
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // What drizzle-kit records for all but the BOM file: the same rows, byte for byte.
    let without_bom = twin::prefix(f.path(), vectors.len() - 1);
    let twin_url = twin::fresh_db("conf_hashes_kit");
    twin::kit_migrate_all(&twin_url, &without_bom, "drizzle-kit, hash vectors");
    assert_eq!(
        run::rows(&twin_url),
        rows[..vectors.len() - 1],
        "drizzle-kit recorded other rows than portcullis"
    );

    // The rows are text as written: no normalisation in the column either.
    let lengths = support::query(
        &url,
        "select count(*) from drizzle.__drizzle_migrations where hash ~ '^[0-9a-f]{64}$'",
    );
    assert_eq!(
        lengths[0][0].as_deref(),
        Some(vectors.len().to_string().as_str())
    );
}
