//! Flower's content-addressed object store: how a message's content travels in the Fleet API.
//!
//! An object is `<Class> <child ids joined by ','> <body length>`, one 0x00 byte, and the body;
//! its id is the lowercase hex sha256 of those bytes. A message is a tree of objects:
//!
//! | class | body | children |
//! |---|---|---|
//! | `Message` | the `flwr.proto.Message` protobuf with its metadata (`message_id` empty) and error, no content | its `RecordDict`, unless it carries an error |
//! | `RecordDict` | JSON `{record name: object id}` | the records |
//! | `ArrayRecord` | JSON `{array name: object id}` | the arrays |
//! | `Array` | JSON `{"dtype", "shape", "stype", "arraychunk_ids"}`, each chunk id an index into the children | its distinct chunks |
//! | `ArrayChunk` | raw bytes, at most [`MAX_CHUNK`] | none |
//! | `ConfigRecord`, `MetricRecord` | the record's protobuf | none |
//!
//! Children are listed once each, in order of first appearance (two equal arrays, or two equal
//! chunks, are one object). JSON is written as Python's `json.dumps` writes it (`", "` and
//! `": "` separators, non-ASCII escaped), so the ids computed here equal Flower's for the same
//! content; `tests/fixtures/flower_objects.json` checks that against flwr's own code.
//!
//! [`deflate_message`] turns a message into objects and their [`ObjectTree`]; [`inflate_message`]
//! pulls a message's objects through a callback and checks every one: its hash, its header, its
//! children against the tree and the body, its body's shape. Anything else is an
//! [`Error::Object`] naming the object, never a panic.

use std::collections::HashSet;
use std::fmt::Write as _;

use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::proto::{self, ConfigValue, Metadata, MetricValue, ObjectTree};

/// The largest array chunk Flower sends (`FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE`, 5 MiB).
pub const MAX_CHUNK: usize = 5 * 1024 * 1024;
/// `stype` of arrays serialized as `.npy`.
pub const STYPE_NUMPY: &str = "numpy.ndarray";

/// The class of an object, named in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A message (metadata, error).
    Message,
    /// Named records.
    RecordDict,
    /// Named arrays.
    ArrayRecord,
    /// One array's metadata.
    Array,
    /// A slice of an array's serialized bytes.
    ArrayChunk,
    /// Configuration values.
    ConfigRecord,
    /// Metric values.
    MetricRecord,
}

impl Class {
    /// The name in the header (the Python class name).
    pub fn name(self) -> &'static str {
        match self {
            Class::Message => "Message",
            Class::RecordDict => "RecordDict",
            Class::ArrayRecord => "ArrayRecord",
            Class::Array => "Array",
            Class::ArrayChunk => "ArrayChunk",
            Class::ConfigRecord => "ConfigRecord",
            Class::MetricRecord => "MetricRecord",
        }
    }

    fn from_name(name: &str) -> Option<Class> {
        Some(match name {
            "Message" => Class::Message,
            "RecordDict" => Class::RecordDict,
            "ArrayRecord" => Class::ArrayRecord,
            "Array" => Class::Array,
            "ArrayChunk" => Class::ArrayChunk,
            "ConfigRecord" => Class::ConfigRecord,
            "MetricRecord" => Class::MetricRecord,
            _ => return None,
        })
    }
}

/// The id of an object: lowercase hex sha256 of its bytes.
pub fn object_id(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        write!(hex, "{b:02x}").expect("writing to a String");
    }
    hex
}

/// Whether `id` looks like an object id (64 lowercase hex digits).
pub fn is_object_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An object's bytes: header, 0x00, body.
pub fn encode_object(class: Class, children: &[String], body: &[u8]) -> Vec<u8> {
    let header = format!("{} {} {}", class.name(), children.join(","), body.len());
    let mut out = Vec::with_capacity(header.len() + 1 + body.len());
    out.extend_from_slice(header.as_bytes());
    out.push(0);
    out.extend_from_slice(body);
    out
}

/// An object read back: its class, children and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// Its class.
    pub class: Class,
    /// Its children's ids, as the header lists them.
    pub children: Vec<String>,
    /// Its body.
    pub body: &'a [u8],
}

/// Checks that `bytes` hash to `id` and have a well-formed header; returns the parts.
///
/// # Errors
/// [`Error::Object`] naming `id`: a hash mismatch, no header, an unknown class, malformed child
/// ids, or a body whose length differs from the header's.
pub fn parse_object<'a>(id: &str, bytes: &'a [u8]) -> Result<Parsed<'a>> {
    let bad = |problem: String| Error::Object { id: id.to_string(), problem };
    let actual = object_id(bytes);
    if actual != id {
        return Err(bad(format!(
            "content hashes to {actual}, not to its id (corrupted or forged)"
        )));
    }
    let split = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad("no header (no 0x00 divider)".into()))?;
    let head =
        std::str::from_utf8(&bytes[..split]).map_err(|_| bad("the header is not UTF-8".into()))?;
    let body = &bytes[split + 1..];
    let mut parts = head.split(' ');
    let (Some(class), Some(children), Some(len), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!("header {head:?} is not `<class> <children> <length>`")));
    };
    let class = Class::from_name(class).ok_or_else(|| bad(format!("unknown class {class:?}")))?;
    let children: Vec<String> = if children.is_empty() {
        Vec::new()
    } else {
        children.split(',').map(str::to_string).collect()
    };
    if let Some(child) = children.iter().find(|c| !is_object_id(c)) {
        return Err(bad(format!("child id {child:?} is not a sha256 hex digest")));
    }
    let len: usize =
        len.parse().map_err(|_| bad(format!("body length {len:?} is not a number")))?;
    if len != body.len() {
        return Err(bad(format!("header says {len} body bytes; there are {}", body.len())));
    }
    Ok(Parsed { class, children, body })
}

/// A record's item: its name and value.
pub type Named<T> = (String, T);

/// One array as Flower holds it: its dtype and shape, how it is serialized, and the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Array {
    /// NumPy dtype name (`float32`).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Serialization (`numpy.ndarray`: the bytes are a `.npy` file).
    pub stype: String,
    /// The serialized array.
    pub data: Vec<u8>,
}

impl Array {
    /// A float32 array, serialized as `.npy`.
    pub fn from_f32(shape: &[usize], values: &[f32]) -> Array {
        Array {
            dtype: "float32".into(),
            shape: shape.iter().map(|&d| d as i64).collect(),
            stype: STYPE_NUMPY.into(),
            data: crate::npy::encode_f32(shape, values),
        }
    }
}

/// A record of a [`RecordDict`].
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Named arrays (an `ArrayRecord`), in order.
    Arrays(Vec<(String, Array)>),
    /// Named metrics (a `MetricRecord`).
    Metrics(Vec<(String, MetricValue)>),
    /// Named configuration values (a `ConfigRecord`).
    Config(Vec<(String, ConfigValue)>),
}

/// A message's content: named records, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordDict {
    /// The records.
    pub records: Vec<(String, Record)>,
}

impl RecordDict {
    /// The record named `name`.
    pub fn get(&self, name: &str) -> Option<&Record> {
        self.records.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }
}

/// A message as objects: the root's id, the tree the Fleet API wants, and each distinct object
/// (children before parents).
#[derive(Debug, Clone, PartialEq)]
pub struct Deflated {
    /// The root object's id.
    pub id: String,
    /// The tree of ids.
    pub tree: ObjectTree,
    /// `(id, bytes)` of every distinct object, children first.
    pub objects: Vec<(String, Vec<u8>)>,
}

impl Deflated {
    /// The bytes of object `id`.
    pub fn object(&self, id: &str) -> Option<&[u8]> {
        self.objects.iter().find(|(i, _)| i == id).map(|(_, b)| &b[..])
    }

    /// Bytes of all objects together.
    pub fn total_bytes(&self) -> usize {
        self.objects.iter().map(|(_, b)| b.len()).sum()
    }
}

/// Builds objects children first, each distinct one once.
#[derive(Default)]
struct Builder {
    objects: Vec<(String, Vec<u8>)>,
    seen: HashSet<String>,
}

impl Builder {
    /// Adds an object whose children were added; returns its tree.
    fn add(&mut self, class: Class, children: Vec<ObjectTree>, body: &[u8]) -> ObjectTree {
        let ids: Vec<String> = children.iter().map(|c| c.object_id.clone()).collect();
        let bytes = encode_object(class, &ids, body);
        let id = object_id(&bytes);
        if self.seen.insert(id.clone()) {
            self.objects.push((id.clone(), bytes));
        }
        ObjectTree { object_id: id, children }
    }

    fn chunk(&mut self, data: &[u8]) -> ObjectTree {
        self.add(Class::ArrayChunk, Vec::new(), data)
    }

    fn array(&mut self, array: &Array) -> ObjectTree {
        let chunks: Vec<ObjectTree> = array.data.chunks(MAX_CHUNK).map(|c| self.chunk(c)).collect();
        let (children, indices) = distinct(chunks);
        let shape: Vec<String> = array.shape.iter().map(i64::to_string).collect();
        let indices: Vec<String> = indices.iter().map(usize::to_string).collect();
        let body = format!(
            "{{\"dtype\": {}, \"shape\": [{}], \"stype\": {}, \"arraychunk_ids\": [{}]}}",
            py_json_str(&array.dtype),
            shape.join(", "),
            py_json_str(&array.stype),
            indices.join(", ")
        );
        self.add(Class::Array, children, body.as_bytes())
    }

    /// A JSON `{name: id}` object over `named` children.
    fn refs(&mut self, class: Class, named: Vec<(&str, ObjectTree)>) -> ObjectTree {
        let pairs: Vec<String> = named
            .iter()
            .map(|(name, t)| format!("{}: {}", py_json_str(name), py_json_str(&t.object_id)))
            .collect();
        let body = format!("{{{}}}", pairs.join(", "));
        let (children, _) = distinct(named.into_iter().map(|(_, t)| t).collect());
        self.add(class, children, body.as_bytes())
    }

    fn record(&mut self, record: &Record) -> ObjectTree {
        match record {
            Record::Arrays(arrays) => {
                let named = arrays.iter().map(|(n, a)| (n.as_str(), self.array(a))).collect();
                self.refs(Class::ArrayRecord, named)
            }
            Record::Metrics(items) => {
                let body = proto::encode(&metric_record_proto(items));
                self.add(Class::MetricRecord, Vec::new(), &body)
            }
            Record::Config(items) => {
                let body = proto::encode(&config_record_proto(items));
                self.add(Class::ConfigRecord, Vec::new(), &body)
            }
        }
    }

    fn record_dict(&mut self, content: &RecordDict) -> ObjectTree {
        let named = content.records.iter().map(|(n, r)| (n.as_str(), self.record(r))).collect();
        self.refs(Class::RecordDict, named)
    }
}

/// The distinct trees in order of first appearance, and each input's index among them.
fn distinct(trees: Vec<ObjectTree>) -> (Vec<ObjectTree>, Vec<usize>) {
    let mut unique: Vec<ObjectTree> = Vec::new();
    let mut indices = Vec::with_capacity(trees.len());
    for tree in trees {
        match unique.iter().position(|u| u.object_id == tree.object_id) {
            Some(i) => indices.push(i),
            None => {
                indices.push(unique.len());
                unique.push(tree);
            }
        }
    }
    (unique, indices)
}

/// `items` as a `flwr.proto.MetricRecord`.
pub fn metric_record_proto(items: &[(String, MetricValue)]) -> proto::MetricRecord {
    proto::MetricRecord {
        items: items
            .iter()
            .map(|(k, v)| proto::MetricRecordItem {
                key: k.clone(),
                value: Some(proto::MetricRecordValue { value: Some(v.clone()) }),
            })
            .collect(),
    }
}

/// `items` as a `flwr.proto.ConfigRecord`.
pub fn config_record_proto(items: &[(String, ConfigValue)]) -> proto::ConfigRecord {
    proto::ConfigRecord {
        items: items
            .iter()
            .map(|(k, v)| proto::ConfigRecordItem {
                key: k.clone(),
                value: Some(proto::ConfigRecordValue { value: Some(v.clone()) }),
            })
            .collect(),
    }
}

/// A message as objects. `metadata.message_id` is ignored (the message's id is its object's
/// id); a message carries `content` or `error`.
pub fn deflate_message(
    metadata: &Metadata,
    content: Option<&RecordDict>,
    error: Option<&proto::Error>,
) -> Deflated {
    let mut builder = Builder::default();
    let children = content.map(|c| vec![builder.record_dict(c)]).unwrap_or_default();
    let body = proto::encode(&proto::Message {
        metadata: Some(Metadata { message_id: String::new(), ..metadata.clone() }),
        content: None,
        error: error.cloned(),
    });
    let tree = builder.add(Class::Message, children, &body);
    Deflated { id: tree.object_id.clone(), tree, objects: builder.objects }
}

/// `text` as Python's `json.dumps` writes a string (`ensure_ascii`: everything outside
/// printable ASCII escaped, astral characters as surrogate pairs).
pub fn py_json_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(out, "\\u{u:04x}").expect("writing to a String");
                }
            }
        }
    }
    out.push('"');
    out
}

/// A message pulled from the SuperLink: its metadata (as its `Message` object holds it, with
/// `message_id` set to the object's id), and its content or error.
#[derive(Debug, Clone, PartialEq)]
pub struct Inflated {
    /// Metadata.
    pub metadata: Metadata,
    /// Content (when there is no error).
    pub content: Option<RecordDict>,
    /// Error (when there is no content).
    pub error: Option<proto::Error>,
    /// Bytes of every object pulled.
    pub bytes: usize,
}

/// Limits on what [`inflate_message`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Objects in one message.
    pub max_objects: usize,
    /// Bytes of all objects of one message together.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_objects: 1 << 20, max_bytes: 16 << 30 }
    }
}

/// Reads the message `tree` describes, pulling each object through `fetch` (which returns its
/// bytes) and checking each one (see the [module docs](self)).
///
/// # Errors
/// [`Error::Object`] for the first object that is malformed, hashes to another id, has other
/// children than the tree says, or is not of a class its parent may hold; what `fetch` returns.
pub fn inflate_message(
    tree: &ObjectTree,
    limits: Limits,
    fetch: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
) -> Result<Inflated> {
    let mut reader = Reader { fetch, limits, objects: 0, bytes: 0 };
    let root = reader.pull(tree)?;
    let bad = |problem: String| Error::Object { id: tree.object_id.clone(), problem };
    if root.class != Class::Message {
        return Err(bad(format!("the root object is a {}, not a Message", root.class.name())));
    }
    let message = proto::Message::decode(&root.body[..])
        .map_err(|e| bad(format!("not a flwr.proto.Message: {e}")))?;
    let mut metadata = message.metadata.ok_or_else(|| bad("the message has no metadata".into()))?;
    metadata.message_id = tree.object_id.clone();
    let (content, error) = match (message.error, &tree.children[..]) {
        (Some(error), []) => (None, Some(error)),
        (Some(_), _) => return Err(bad("a message with an error has children".into())),
        (None, [child]) => (Some(reader.record_dict(child)?), None),
        (None, children) => {
            return Err(bad(format!(
                "a message holds one RecordDict; this one has {} children",
                children.len()
            )));
        }
    };
    Ok(Inflated { metadata, content, error, bytes: reader.bytes })
}

/// An object pulled and checked, with its bytes.
struct Pulled {
    class: Class,
    body: Vec<u8>,
}

struct Reader<'f> {
    fetch: &'f mut dyn FnMut(&str) -> Result<Vec<u8>>,
    limits: Limits,
    objects: usize,
    bytes: usize,
}

impl Reader<'_> {
    /// Pulls `tree`'s root and checks its hash, its header, and its children against the tree.
    fn pull(&mut self, tree: &ObjectTree) -> Result<Pulled> {
        let id = &tree.object_id;
        let bad = |problem: String| Error::Object { id: id.clone(), problem };
        if !is_object_id(id) {
            return Err(bad("the id is not a sha256 hex digest".into()));
        }
        self.objects += 1;
        if self.objects > self.limits.max_objects {
            return Err(bad(format!("the message has over {} objects", self.limits.max_objects)));
        }
        let bytes = (self.fetch)(id)?;
        self.bytes += bytes.len();
        if self.bytes > self.limits.max_bytes {
            return Err(bad(format!("the message is over {} bytes", self.limits.max_bytes)));
        }
        let parsed = parse_object(id, &bytes)?;
        let tree_children: Vec<&str> = tree.children.iter().map(|c| c.object_id.as_str()).collect();
        if parsed.children != tree_children {
            return Err(bad(format!(
                "its header lists children {:?}; the message's object tree {:?}",
                parsed.children, tree_children
            )));
        }
        let class = parsed.class;
        let body = parsed.body.to_vec();
        Ok(Pulled { class, body })
    }

    /// Pulls `tree`, which must be of class `class`.
    fn pull_as(&mut self, tree: &ObjectTree, class: Class) -> Result<Pulled> {
        let pulled = self.pull(tree)?;
        if pulled.class != class {
            return Err(Error::Object {
                id: tree.object_id.clone(),
                problem: format!(
                    "is a {}; a {} was expected here",
                    pulled.class.name(),
                    class.name()
                ),
            });
        }
        Ok(pulled)
    }

    fn record_dict(&mut self, tree: &ObjectTree) -> Result<RecordDict> {
        let pulled = self.pull_as(tree, Class::RecordDict)?;
        let refs = json_refs(&tree.object_id, &pulled.body, tree)?;
        let mut records = Vec::with_capacity(refs.len());
        let mut done: Vec<(String, Record)> = Vec::new();
        for (name, child) in refs {
            let record = match done.iter().find(|(id, _)| *id == child.object_id) {
                Some((_, r)) => r.clone(),
                None => {
                    let r = self.record(child)?;
                    done.push((child.object_id.clone(), r.clone()));
                    r
                }
            };
            records.push((name, record));
        }
        Ok(RecordDict { records })
    }

    fn record(&mut self, tree: &ObjectTree) -> Result<Record> {
        let pulled = self.pull(tree)?;
        let bad = |problem: String| Error::Object { id: tree.object_id.clone(), problem };
        match pulled.class {
            Class::ArrayRecord => {
                let refs = json_refs(&tree.object_id, &pulled.body, tree)?;
                let mut arrays = Vec::with_capacity(refs.len());
                let mut done: Vec<(String, Array)> = Vec::new();
                for (name, child) in refs {
                    let array = match done.iter().find(|(id, _)| *id == child.object_id) {
                        Some((_, a)) => a.clone(),
                        None => {
                            let a = self.array(child)?;
                            done.push((child.object_id.clone(), a.clone()));
                            a
                        }
                    };
                    arrays.push((name, array));
                }
                Ok(Record::Arrays(arrays))
            }
            Class::ConfigRecord => {
                let record = proto::ConfigRecord::decode(&pulled.body[..])
                    .map_err(|e| bad(format!("not a flwr.proto.ConfigRecord: {e}")))?;
                let items = record
                    .items
                    .into_iter()
                    .map(|i| match i.value.and_then(|v| v.value) {
                        Some(v) => Ok((i.key, v)),
                        None => Err(bad(format!("config key {:?} has no value", i.key))),
                    })
                    .collect::<Result<_>>()?;
                Ok(Record::Config(items))
            }
            Class::MetricRecord => {
                let record = proto::MetricRecord::decode(&pulled.body[..])
                    .map_err(|e| bad(format!("not a flwr.proto.MetricRecord: {e}")))?;
                let items = record
                    .items
                    .into_iter()
                    .map(|i| match i.value.and_then(|v| v.value) {
                        Some(v) => Ok((i.key, v)),
                        None => Err(bad(format!("metric {:?} has no value", i.key))),
                    })
                    .collect::<Result<_>>()?;
                Ok(Record::Metrics(items))
            }
            other => Err(bad(format!("a RecordDict cannot hold a {}", other.name()))),
        }
    }

    fn array(&mut self, tree: &ObjectTree) -> Result<Array> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Meta {
            dtype: String,
            shape: Vec<i64>,
            stype: String,
            arraychunk_ids: Vec<usize>,
        }
        let pulled = self.pull_as(tree, Class::Array)?;
        let bad = |problem: String| Error::Object { id: tree.object_id.clone(), problem };
        let meta: Meta = serde_json::from_slice(&pulled.body)
            .map_err(|e| bad(format!("not an Array's JSON: {e}")))?;
        let children = &tree.children;
        if let Some(&i) = meta.arraychunk_ids.iter().find(|&&i| i >= children.len()) {
            return Err(bad(format!("chunk index {i} is past its {} children", children.len())));
        }
        let used: HashSet<usize> = meta.arraychunk_ids.iter().copied().collect();
        if used.len() != children.len() {
            return Err(bad(format!(
                "{} children, of which its chunk list uses {}",
                children.len(),
                used.len()
            )));
        }
        let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(children.len());
        for child in children {
            let chunk = self.pull_as(child, Class::ArrayChunk)?;
            if chunk.body.len() > MAX_CHUNK {
                return Err(Error::Object {
                    id: child.object_id.clone(),
                    problem: format!("a chunk of {} bytes is over 5 MiB", chunk.body.len()),
                });
            }
            chunks.push(chunk.body);
        }
        // A short list of chunk ids can name a large chunk many times: bound the total first.
        let total = meta
            .arraychunk_ids
            .iter()
            .try_fold(0usize, |n, &i| n.checked_add(chunks[i].len()))
            .filter(|&n| n <= self.limits.max_bytes)
            .ok_or_else(|| {
                bad(format!("its chunks add up to over {} bytes", self.limits.max_bytes))
            })?;
        let mut data = Vec::with_capacity(total);
        for &i in &meta.arraychunk_ids {
            data.extend_from_slice(&chunks[i]);
        }
        Ok(Array { dtype: meta.dtype, shape: meta.shape, stype: meta.stype, data })
    }
}

/// A JSON object of strings to strings, in the order written (the names' order matters to a
/// reader that rebuilds the record, and `serde_json`'s map sorts its keys).
struct Ordered(Vec<(String, String)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of names to object ids")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Ordered, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    if pairs.iter().any(|(k, _): &(String, String)| *k == pair.0) {
                        return Err(serde::de::Error::custom(format!("name {:?} twice", pair.0)));
                    }
                    pairs.push(pair);
                }
                Ok(Ordered(pairs))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The `{name: id}` body of a RecordDict or ArrayRecord, each name with its child's tree. The
/// ids must be exactly the object's children.
fn json_refs<'t>(
    id: &str,
    body: &[u8],
    tree: &'t ObjectTree,
) -> Result<Vec<(String, &'t ObjectTree)>> {
    let bad = |problem: String| Error::Object { id: id.to_string(), problem };
    let map: Ordered = serde_json::from_slice(body)
        .map_err(|e| bad(format!("not a JSON object of names to ids: {e}")))?;
    let map = map.0;
    let mut refs = Vec::with_capacity(map.len());
    let mut used = HashSet::new();
    for (name, value) in map {
        let child_id = value.as_str();
        let child = tree
            .children
            .iter()
            .find(|c| c.object_id == child_id)
            .ok_or_else(|| bad(format!("{name:?} names {child_id}, which is not a child")))?;
        used.insert(child_id.to_string());
        refs.push((name, child));
    }
    if used.len() != tree.children.len() {
        return Err(bad(format!(
            "{} children, of which its names use {}",
            tree.children.len(),
            used.len()
        )));
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(d: &Deflated) -> impl FnMut(&str) -> Result<Vec<u8>> + '_ {
        move |id: &str| {
            d.object(id).map(<[u8]>::to_vec).ok_or_else(|| Error::Object {
                id: id.into(),
                problem: "not in the test store".into(),
            })
        }
    }

    fn sample() -> (Metadata, RecordDict) {
        let metadata = Metadata {
            run_id: 7,
            src_node_id: 1,
            dst_node_id: 42,
            group_id: "1".into(),
            ttl: 3600.0,
            message_type: "train".into(),
            created_at: 1_760_000_000.5,
            ..Default::default()
        };
        let content = RecordDict {
            records: vec![
                (
                    "arrays".into(),
                    Record::Arrays(vec![
                        ("a".into(), Array::from_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
                        ("b".into(), Array::from_f32(&[3], &[0.0; 3])),
                        ("c".into(), Array::from_f32(&[3], &[0.0; 3])),
                    ]),
                ),
                (
                    "config".into(),
                    Record::Config(vec![
                        ("server-round".into(), ConfigValue::Sint64(2)),
                        ("lr".into(), ConfigValue::Double(0.01)),
                    ]),
                ),
                (
                    "metrics".into(),
                    Record::Metrics(vec![("num-examples".into(), MetricValue::Sint64(5))]),
                ),
            ],
        };
        (metadata, content)
    }

    #[test]
    fn header_and_id() {
        let bytes = encode_object(Class::ArrayChunk, &[], b"abc");
        assert_eq!(bytes, b"ArrayChunk  3\0abc");
        // sha256 of the bytes above, from `hashlib.sha256(b"ArrayChunk  3\x00abc").hexdigest()`.
        let id = object_id(&bytes);
        assert!(is_object_id(&id));
        let parsed = parse_object(&id, &bytes).unwrap();
        assert_eq!(parsed.class, Class::ArrayChunk);
        assert_eq!(parsed.body, b"abc");
    }

    #[test]
    fn deflate_then_inflate_is_identity_and_equal_arrays_are_one_object() {
        let (metadata, content) = sample();
        let d = deflate_message(&metadata, Some(&content), None);
        // Message, RecordDict, ArrayRecord, 2 distinct arrays, 2 distinct chunks, config, metrics.
        assert_eq!(d.objects.len(), 9);
        let array_record = &d.tree.children[0].children[0];
        assert_eq!(array_record.children.len(), 2, "equal arrays b and c are one child");
        let back = inflate_message(&d.tree, Limits::default(), &mut store(&d)).unwrap();
        assert_eq!(back.content.as_ref(), Some(&content));
        assert_eq!(back.metadata.message_id, d.id);
        assert_eq!(back.metadata.run_id, 7);
        assert_eq!(back.bytes, d.total_bytes());
    }

    #[test]
    fn chunks_at_five_mib() {
        let n = MAX_CHUNK / 4 + 1000; // floats: the .npy is just over 5 MiB
        let values: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
        let array = Array::from_f32(&[n], &values);
        let content = RecordDict {
            records: vec![("arrays".into(), Record::Arrays(vec![("x".into(), array.clone())]))],
        };
        let d = deflate_message(&Metadata::default(), Some(&content), None);
        let array_tree = &d.tree.children[0].children[0].children[0];
        assert_eq!(array_tree.children.len(), 2);
        let first = d.object(&array_tree.children[0].object_id).unwrap();
        let second = d.object(&array_tree.children[1].object_id).unwrap();
        let body_len = |b: &[u8]| b.len() - b.iter().position(|&x| x == 0).unwrap() - 1;
        assert_eq!(body_len(first), MAX_CHUNK);
        assert_eq!(body_len(second), array.data.len() - MAX_CHUNK);
        let back = inflate_message(&d.tree, Limits::default(), &mut store(&d)).unwrap();
        let Some(Record::Arrays(arrays)) = back.content.unwrap().get("arrays").cloned() else {
            panic!()
        };
        assert_eq!(arrays[0].1, array);
        // Equal chunks are one child, listed twice in the array's chunk ids.
        let zeros = Array { data: vec![0; 2 * MAX_CHUNK], ..array };
        let content = RecordDict {
            records: vec![("arrays".into(), Record::Arrays(vec![("z".into(), zeros)]))],
        };
        let d = deflate_message(&Metadata::default(), Some(&content), None);
        let array_tree = &d.tree.children[0].children[0].children[0];
        assert_eq!(array_tree.children.len(), 1);
        let body = d.object(&array_tree.object_id).unwrap();
        assert!(String::from_utf8_lossy(body).contains("\"arraychunk_ids\": [0, 0]"));
    }

    #[test]
    fn rejects_a_hash_mismatch_and_a_wrong_tree() {
        let (metadata, content) = sample();
        let d = deflate_message(&metadata, Some(&content), None);
        // One flipped byte in a chunk.
        let chunk_id = d.tree.children[0].children[0].children[0].children[0].object_id.clone();
        let mut tampered = d.clone();
        for (id, bytes) in &mut tampered.objects {
            if *id == chunk_id {
                *bytes.last_mut().unwrap() ^= 1;
            }
        }
        let err = inflate_message(&d.tree, Limits::default(), &mut store(&tampered)).unwrap_err();
        assert!(err.to_string().contains("hashes to"), "{err}");
        assert!(err.to_string().contains(&chunk_id), "{err}");
        // A tree that hides a child.
        let mut tree = d.tree.clone();
        tree.children[0].children.pop();
        let err = inflate_message(&tree, Limits::default(), &mut store(&d)).unwrap_err();
        assert!(err.to_string().contains("object tree"), "{err}");
        // An object of the wrong class where a chunk belongs.
        let mut tree = d.tree.clone();
        let config = d.tree.children[0].children[1].clone();
        tree.children[0].children[0].children[0].children[0] = config;
        assert!(inflate_message(&tree, Limits::default(), &mut store(&d)).is_err());
        // Limits.
        let limits = Limits { max_objects: 3, ..Limits::default() };
        let err = inflate_message(&d.tree, limits, &mut store(&d)).unwrap_err();
        assert!(err.to_string().contains("over 3 objects"), "{err}");
    }

    #[test]
    fn chunk_lists_that_repeat_a_chunk_past_the_limit_are_refused() {
        let mut store: Vec<(String, Vec<u8>)> = Vec::new();
        let mut add = |class, children: Vec<ObjectTree>, body: &[u8]| {
            let ids: Vec<String> = children.iter().map(|c| c.object_id.clone()).collect();
            let bytes = encode_object(class, &ids, body);
            let id = object_id(&bytes);
            store.push((id.clone(), bytes));
            ObjectTree { object_id: id, children }
        };
        let chunk = add(Class::ArrayChunk, vec![], &[7u8; 100]);
        let ids = vec!["0"; 20].join(", ");
        let body = format!(
            "{{\"dtype\": \"float32\", \"shape\": [500], \"stype\": \"numpy.ndarray\", \"arraychunk_ids\": [{ids}]}}"
        );
        let array = add(Class::Array, vec![chunk], body.as_bytes());
        let body = format!("{{\"x\": \"{}\"}}", array.object_id);
        let record = add(Class::ArrayRecord, vec![array], body.as_bytes());
        let body = format!("{{\"arrays\": \"{}\"}}", record.object_id);
        let dict = add(Class::RecordDict, vec![record], body.as_bytes());
        let message = proto::encode(&proto::Message {
            metadata: Some(Metadata::default()),
            ..Default::default()
        });
        let tree = add(Class::Message, vec![dict], &message);
        let mut fetch = |id: &str| -> Result<Vec<u8>> {
            Ok(store.iter().find(|(i, _)| i == id).map(|(_, b)| b.clone()).unwrap())
        };
        let limits = Limits { max_objects: 100, max_bytes: 1500 };
        let err = inflate_message(&tree, limits, &mut fetch).unwrap_err().to_string();
        assert!(err.contains("add up to over 1500 bytes"), "{err}");
        // Within the limit it reads: 20 copies of the chunk.
        let back = inflate_message(&tree, Limits::default(), &mut fetch).unwrap();
        let Some(Record::Arrays(arrays)) = back.content.unwrap().get("arrays").cloned() else {
            panic!("no arrays")
        };
        assert_eq!(arrays[0].1.data, vec![7u8; 2000]);
    }

    #[test]
    fn malformed_objects_are_errors() {
        let id_of = |b: &[u8]| object_id(b);
        for (bytes, expect) in [
            (b"no divider".to_vec(), "no header"),
            (b"Thing  0\0".to_vec(), "unknown class"),
            (b"ArrayChunk  9\0abc".to_vec(), "header says 9"),
            (b"ArrayChunk 12,34 0\0".to_vec(), "child id"),
            (b"ArrayChunk 0\0".to_vec(), "is not `<class>"),
        ] {
            let err = parse_object(&id_of(&bytes), &bytes).unwrap_err().to_string();
            assert!(err.contains(expect), "{err} should contain {expect}");
        }
    }

    #[test]
    fn json_strings_as_python_writes_them() {
        assert_eq!(py_json_str("a.b_c"), "\"a.b_c\"");
        assert_eq!(py_json_str("q\"\\\n\u{1}"), "\"q\\\"\\\\\\n\\u0001\"");
        assert_eq!(py_json_str("é😀\u{7f}"), "\"\\u00e9\\ud83d\\ude00\\u007f\"");
    }

    #[test]
    fn error_messages_have_no_children() {
        let (metadata, _) = sample();
        let error = proto::Error { code: 2, reason: "boom".into() };
        let d = deflate_message(&metadata, None, Some(&error));
        assert_eq!(d.objects.len(), 1);
        let back = inflate_message(&d.tree, Limits::default(), &mut store(&d)).unwrap();
        assert_eq!(back.error, Some(error));
        assert!(back.content.is_none());
    }
}
