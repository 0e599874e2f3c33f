//! Drizzle's statement splitting and hashing, byte for byte (drizzle-compat.md 1.4 and 1.5), and
//! the mapping from a server error position back to a line and column in the file.

use sha2::{Digest, Sha256};

/// The literal marker drizzle-kit writes between statements. It is matched anywhere, case
/// sensitively, even inside strings and comments, exactly like JavaScript's `String.split`.
pub const BREAKPOINT: &str = "--> statement-breakpoint";

/// One piece of a migration file between breakpoint markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Byte offset of the chunk's first byte inside the (decoded) file text.
    pub offset: usize,
    pub text: &'a str,
}

impl Chunk<'_> {
    /// Whether sending this chunk could do anything. Whitespace-only chunks are skipped: drizzle
    /// sends them and gets an empty-query response, so skipping them changes nothing (E1).
    /// Whitespace as PostgreSQL's scanner knows it (space, tab, newline, carriage return, form
    /// feed, vertical tab): a chunk of other Unicode spaces (U+00A0, U+3000) is sent, and fails
    /// as it does under drizzle.
    pub fn is_blank(&self) -> bool {
        self.text
            .bytes()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
    }
}

/// Splits like `text.split('--> statement-breakpoint')`: N markers give N+1 chunks, empty chunks
/// are kept, nothing is trimmed.
pub fn split(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for (at, _) in text.match_indices(BREAKPOINT) {
        chunks.push(Chunk {
            offset: start,
            text: &text[start..at],
        });
        start = at + BREAKPOINT.len();
    }
    chunks.push(Chunk {
        offset: start,
        text: &text[start..],
    });
    chunks
}

/// Decodes file bytes the way Node's `Buffer.toString()` does: UTF-8, each invalid sequence
/// replaced by U+FFFD, a BOM kept as U+FEFF (E8, E9).
pub fn decode(bytes: &[u8]) -> String {
    // The strict check is several times faster than the lossy decoder, and valid files are
    // the rule.
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Lowercase hex SHA-256 of the decoded text's UTF-8 bytes: the value drizzle stores in `hash`.
pub fn hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// Lowercase hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Hashes of the same text with other line endings or BOM, to tell an operator that a recorded
/// hash differs only by a git `autocrlf` checkout or an editor's BOM, not by content (E7).
pub fn cosmetic_variant_hashes(text: &str) -> Vec<String> {
    let lf = text.replace("\r\n", "\n");
    let crlf = lf.replace('\n', "\r\n");
    let mut variants = vec![lf.clone(), crlf.clone()];
    for v in [text, lf.as_str(), crlf.as_str()] {
        match v.strip_prefix('\u{feff}') {
            Some(stripped) => variants.push(stripped.to_string()),
            None => variants.push(format!("\u{feff}{v}")),
        }
    }
    variants
        .iter()
        .filter(|v| v.as_str() != text)
        .map(|v| hash(v))
        .collect()
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..floor_char_boundary(text, at)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Byte offset inside `sent` of PostgreSQL's 1-based error position, which counts characters.
pub fn position_to_byte(sent: &str, position: u32) -> usize {
    let n = position.saturating_sub(1) as usize;
    sent.char_indices()
        .nth(n)
        .map_or(sent.len(), |(byte, _)| byte)
}

/// Where in `sent` the character is that the database's encoding cannot store: PostgreSQL's
/// 22P05 names it by its bytes in the client's encoding, UTF-8 here (`character with byte
/// sequence 0xe2 0x98 0x95 in encoding "UTF8" has no equivalent in encoding "LATIN1"`; the bytes
/// read the same in every language), but gives no position. The byte offset of its first
/// occurrence, if the bytes make one character found in `sent`.
pub fn untranslatable_at(sent: &str, message: &str) -> Option<usize> {
    let mut bytes = Vec::new();
    let mut rest = message;
    // The first run of `0xNN` words, one space apart.
    while let Some(at) = rest.find("0x") {
        if !bytes.is_empty() && at != 1 {
            break;
        }
        let Some(byte) = rest
            .get(at + 2..at + 4)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        else {
            break;
        };
        bytes.push(byte);
        rest = &rest[at + 4..];
    }
    let character = std::str::from_utf8(&bytes).ok()?;
    if character.chars().count() != 1 {
        return None;
    }
    sent.find(character)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_character_an_encoding_cannot_store_is_found_by_its_bytes() {
        let sent = "-- café\nCREATE TABLE e (a text DEFAULT 'café ☕');";
        let message = "character with byte sequence 0xe2 0x98 0x95 in encoding \"UTF8\" has no \
                       equivalent in encoding \"LATIN1\"";
        let at = untranslatable_at(sent, message).unwrap();
        assert_eq!(&sent[at..at + 3], "☕");
        assert_eq!(line_col(sent, at), (2, 38));
        // Other languages word it differently around the same bytes.
        let german = "Zeichen mit Byte-Folge 0xe2 0x98 0x95 in Kodierung »UTF8« hat keine \
                      Entsprechung in Kodierung »LATIN1«";
        assert_eq!(untranslatable_at(sent, german), Some(at));
        // Not there, not one character, no bytes: no position.
        assert_eq!(untranslatable_at("select 1", message), None);
        assert_eq!(untranslatable_at(sent, "byte sequence 0xe2 0x98 in"), None);
        assert_eq!(untranslatable_at(sent, "no bytes named"), None);
    }

    fn texts(s: &str) -> Vec<&str> {
        split(s).into_iter().map(|c| c.text).collect()
    }

    #[test]
    fn splits_like_javascript() {
        assert_eq!(texts(""), vec![""]);
        assert_eq!(texts("select 1;"), vec!["select 1;"]);
        assert_eq!(
            texts("a;\n--> statement-breakpoint\nb;"),
            vec!["a;\n", "\nb;"]
        );
        // Trailing marker, doubled markers: empty chunks are kept.
        assert_eq!(texts("a;--> statement-breakpoint"), vec!["a;", ""]);
        assert_eq!(
            texts("--> statement-breakpoint--> statement-breakpoint"),
            vec!["", "", ""]
        );
        // Text after the marker on its line starts the next chunk (E3).
        assert_eq!(
            texts("a;\n--> statement-breakpoint -- note\nb;"),
            vec!["a;\n", " -- note\nb;"]
        );
        // Variants are not markers (E5); a marker in a string still splits (E4).
        assert_eq!(texts("a;\n-->statement-breakpoint\nb;").len(), 1);
        assert_eq!(texts("a;\n--> Statement-Breakpoint\nb;").len(), 1);
        assert_eq!(texts("select '--> statement-breakpoint';").len(), 2);
    }

    #[test]
    fn chunk_offsets_point_into_the_file() {
        let text = "a;\n--> statement-breakpoint\nbb;";
        let chunks = split(text);
        assert_eq!(&text[chunks[1].offset..], "\nbb;");
        assert!(!chunks[1].is_blank());
        assert!(split("a;--> statement-breakpoint \n\t")[1].is_blank());
        // Only what PostgreSQL itself skips: other Unicode spaces are sent (and fail there).
        assert!(split("a;--> statement-breakpoint\x0b\x0c\r\n")[1].is_blank());
        assert!(!split("a;--> statement-breakpoint\u{a0}\n")[1].is_blank());
        assert!(!split("a;--> statement-breakpoint\u{3000}")[1].is_blank());
    }

    #[test]
    fn hashes_the_whole_text_unnormalised() {
        // sha256("") and sha256("abc"), well-known vectors.
        assert_eq!(
            hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(hash("a\r\n"), hash("a\n"));
        assert_ne!(hash("\u{feff}a"), hash("a"));
    }

    #[test]
    fn invalid_utf8_is_hashed_as_node_decodes_it() {
        // Node turns each invalid sequence into U+FFFD (EF BF BD) before hashing.
        let text = decode(b"select '\xff\xfe';");
        assert_eq!(text, "select '\u{fffd}\u{fffd}';");
        assert_eq!(hash(&text), hash("select '\u{fffd}\u{fffd}';"));
        // A BOM survives decoding.
        assert!(decode(b"\xef\xbb\xbfselect 1;").starts_with('\u{feff}'));
    }

    #[test]
    fn cosmetic_variants_cover_line_endings_and_bom() {
        let lf = "a;\nb;\n";
        let crlf = "a;\r\nb;\r\n";
        assert!(cosmetic_variant_hashes(crlf).contains(&hash(lf)));
        assert!(cosmetic_variant_hashes(lf).contains(&hash(crlf)));
        assert!(cosmetic_variant_hashes(lf).contains(&hash("\u{feff}a;\nb;\n")));
        assert!(!cosmetic_variant_hashes(lf).contains(&hash(lf)));
        assert!(!cosmetic_variant_hashes(lf).contains(&hash("a;\nc;\n")));
    }

    #[test]
    fn positions_map_to_lines_and_columns() {
        let text = "-- héader\nselect\n  bogus;";
        assert_eq!(line_col(text, 0), (1, 1));
        let at = text.find("bogus").unwrap();
        assert_eq!(line_col(text, at), (3, 3));
        // PostgreSQL positions count characters: "é" is one.
        let pos = text.chars().position(|c| c == 'b').unwrap() as u32 + 1;
        assert_eq!(position_to_byte(text, pos), at);
        assert_eq!(position_to_byte(text, 9999), text.len());
    }
}
