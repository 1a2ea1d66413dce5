//! Fuzz how the Flower client reads a message from the object store: one object's header and
//! hash ([`parse_object`]), and a whole message pulled and checked object by object
//! ([`inflate_message`]), its arrays then read as `.npy`.
//!
//! Objects are named by the sha256 of their bytes, which a fuzzer cannot forge; so the input
//! names them by placeholders that this target resolves. The input is a list of objects
//! separated by [`SEPARATOR`], the first the root; in each, `$k` stands for the id of object
//! `k` (a later one), and an object's children in the tree are the objects it names, in order.
//! The first input byte picks the mode: odd, the list is the rest of the input; even, the list
//! is a damaged copy (see `mft_fuzz::corrupt`) of a valid message of arrays, metrics and
//! configuration. Bad input must be an error naming the object, never a panic.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mft_fl::error::Error;
use mft_fl::objects::{
    Array, Limits, Record, RecordDict, deflate_message, inflate_message, object_id, parse_object,
};
use mft_fl::proto::{ConfigValue, Metadata, MetricValue, ObjectTree};

/// Between two objects of the input.
const SEPARATOR: &[u8] = b"\n\xff\xfe\n";

/// A valid message in the input's form: its objects root first, ids replaced by `$k`.
fn valid_input() -> &'static [u8] {
    static INPUT: OnceLock<Vec<u8>> = OnceLock::new();
    INPUT.get_or_init(|| {
        let content = RecordDict {
            records: vec![
                (
                    "arrays".into(),
                    Record::Arrays(vec![
                        ("a".into(), Array::from_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
                        ("b".into(), Array::from_f32(&[4], &[0.5, 0.25, -1.0, 8.0])),
                    ]),
                ),
                (
                    "metrics".into(),
                    Record::Metrics(vec![("loss".into(), MetricValue::Double(0.5))]),
                ),
                ("config".into(), Record::Config(vec![("lr".into(), ConfigValue::Double(1e-3))])),
            ],
        };
        let metadata = Metadata { run_id: 7, message_type: "train".into(), ..Default::default() };
        let deflated = deflate_message(&metadata, Some(&content), None);
        let mut objects: Vec<Vec<u8>> =
            deflated.objects.iter().rev().map(|(_, b)| b.clone()).collect();
        let ids: Vec<String> = deflated.objects.iter().rev().map(|(id, _)| id.clone()).collect();
        for object in &mut objects {
            for (k, id) in ids.iter().enumerate() {
                *object = replace(object, id.as_bytes(), format!("${k}").as_bytes());
            }
        }
        objects.join(SEPARATOR)
    })
}

/// `haystack` with every `from` replaced by `to`.
fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// The objects of `input` with their placeholders resolved, and the tree of object `index`.
fn resolve(input: &[u8]) -> (HashMap<String, Vec<u8>>, Option<ObjectTree>) {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut rest = input;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        parts.push(rest[..at].to_vec());
        rest = &rest[at + SEPARATOR.len()..];
    }
    parts.push(rest.to_vec());
    parts.truncate(10);
    // Later objects first: a placeholder names only a later object, whose id is then known.
    let mut trees: Vec<Option<ObjectTree>> = vec![None; parts.len()];
    let mut store = HashMap::new();
    for i in (0..parts.len()).rev() {
        let mut bytes = parts[i].clone();
        // The children in the order the object first names them.
        let mut named: Vec<(usize, &ObjectTree)> = Vec::new();
        for (k, tree) in trees.iter().enumerate().skip(i + 1) {
            let placeholder = format!("${k}");
            if let Some(at) = bytes.windows(2).position(|w| w == placeholder.as_bytes()) {
                named.push((at, tree.as_ref().expect("built above")));
            }
        }
        named.sort_by_key(|&(at, _)| at);
        for (k, tree) in trees.iter().enumerate().skip(i + 1) {
            let id = tree.as_ref().expect("built above").object_id.as_bytes();
            bytes = replace(&bytes, format!("${k}").as_bytes(), id);
        }
        let children = named.into_iter().map(|(_, tree)| tree.clone()).collect();
        let id = object_id(&bytes);
        trees[i] = Some(ObjectTree { object_id: id.clone(), children });
        store.insert(id, bytes);
    }
    (store, trees.into_iter().next().flatten())
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else { return };
    let _ = parse_object(&object_id(rest), rest);
    let input = if how & 1 == 1 { rest.to_vec() } else { mft_fuzz::corrupt(valid_input(), rest) };
    let (store, Some(tree)) = resolve(&input) else { return };
    let mut fetch = |id: &str| {
        store
            .get(id)
            .cloned()
            .ok_or_else(|| Error::Object { id: id.into(), problem: "absent".into() })
    };
    let limits = Limits { max_objects: 64, max_bytes: 1 << 20 };
    let inflated = inflate_message(&tree, limits, &mut fetch);
    if how & 1 == 0 && rest.is_empty() {
        // The valid message itself (`corrupt` of no bytes): the placeholders round-trip.
        let message = inflated.as_ref().expect("the valid message inflates");
        assert_eq!(message.content.as_ref().map(|c| c.records.len()), Some(3));
    }
    let Ok(message) = inflated else { return };
    for (_, record) in message.content.iter().flat_map(|c| &c.records) {
        if let Record::Arrays(arrays) = record {
            for (_, array) in arrays {
                let _ = mft_fl::npy::decode_f32(&array.data);
            }
        }
    }
});
