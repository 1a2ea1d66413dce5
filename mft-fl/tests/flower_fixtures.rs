//! mft-fl's objects against Flower's own: `tests/fixtures/flower_objects.json` holds the ids
//! (and the bytes of the small objects) that flwr 1.42.0 computes for a fixed message
//! (`mft-fl/flower/object_fixtures.py` wrote it). Building the same message here must give the
//! same bytes and ids, and the message must read back from Flower's objects.

use std::collections::HashMap;

use base64::Engine as _;
use mft_fl::objects::{self, Array, Limits, Record, RecordDict};
use mft_fl::proto::{ConfigValue, Metadata, MetricValue, ObjectTree};

fn fixture() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flower_objects.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tree_of(value: &serde_json::Value) -> ObjectTree {
    ObjectTree {
        object_id: value["id"].as_str().unwrap().to_string(),
        children: value["children"].as_array().unwrap().iter().map(tree_of).collect(),
    }
}

/// `(i % 97 - 48) * scale` computed in float64 and rounded to float32, as the script's
/// `values` does it in NumPy.
fn values(n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|i| (((i % 97) as f64 - 48.0) * scale) as f32).collect()
}

fn message(big: usize) -> (Metadata, RecordDict) {
    let metadata = Metadata {
        run_id: 7,
        src_node_id: 1,
        dst_node_id: 42,
        group_id: "2".into(),
        created_at: 1_760_000_000.5,
        ttl: 3600.0,
        message_type: "train".into(),
        ..Default::default()
    };
    let arrays = vec![
        (
            "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight".to_string(),
            Array::from_f32(&[4, 16], &values(64, 0.01)),
        ),
        (
            "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight".to_string(),
            Array::from_f32(&[48, 4], &[0.0; 192]),
        ),
        (
            "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight".to_string(),
            Array::from_f32(&[48, 4], &[0.0; 192]),
        ),
        ("big".to_string(), Array::from_f32(&[big], &values(big, 0.5))),
        (
            "zeros-two-chunks".to_string(),
            Array::from_f32(&[2 * objects::MAX_CHUNK / 4], &vec![0.0; 2 * objects::MAX_CHUNK / 4]),
        ),
        ("scalar".to_string(), Array::from_f32(&[], &[3.5])),
    ];
    let config = vec![
        ("server-round".to_string(), ConfigValue::Sint64(2)),
        ("lr".to_string(), ConfigValue::Double(0.01)),
        ("proximal-mu".to_string(), ConfigValue::Double(0.1)),
        ("name".to_string(), ConfigValue::String("héllo".into())),
        ("flag".to_string(), ConfigValue::Bool(true)),
    ];
    let metrics = vec![
        ("num-examples".to_string(), MetricValue::Sint64(250)),
        ("train-loss".to_string(), MetricValue::Double(1.25)),
    ];
    let content = RecordDict {
        records: vec![
            ("arrays".into(), Record::Arrays(arrays)),
            ("config".into(), Record::Config(config)),
            ("metrics".into(), Record::Metrics(metrics)),
        ],
    };
    (metadata, content)
}

#[test]
fn ids_and_bytes_equal_flowers() {
    let fixture = fixture();
    let big = fixture["big_len"].as_u64().unwrap() as usize;
    let (metadata, content) = message(big);
    let ours = objects::deflate_message(&metadata, Some(&content), None);
    let small = fixture["small_objects"].as_object().unwrap();
    assert!(small.len() >= 10, "the fixture holds the small objects");
    for (id, b64) in small {
        let flowers =
            base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
        let Some(mine) = ours.object(id) else {
            panic!("Flower's object {:?} is not among ours", String::from_utf8_lossy(&flowers));
        };
        assert_eq!(
            String::from_utf8_lossy(mine),
            String::from_utf8_lossy(&flowers),
            "object {id} differs"
        );
        assert_eq!(objects::object_id(&flowers), *id);
    }
    assert_eq!(ours.tree, tree_of(&fixture["tree"]), "the object trees differ");
    assert_eq!(ours.id, fixture["message_id"].as_str().unwrap());
    // The 5 MiB chunking: the big array and the two equal chunks of zeros.
    let array_record = &ours.tree.children[0].children[0];
    let chunks: Vec<usize> = array_record.children.iter().map(|a| a.children.len()).collect();
    // lora_A, the lora_B both layers share, big (5 MiB + the rest), 10 MiB of zeros (the .npy
    // header makes its three chunks distinct), the scalar.
    assert_eq!(chunks, [1, 1, 2, 3, 1]);
}

#[test]
fn flowers_message_reads_back() {
    let fixture = fixture();
    let big = fixture["big_len"].as_u64().unwrap() as usize;
    let (metadata, content) = message(big);
    let ours = objects::deflate_message(&metadata, Some(&content), None);
    let small: HashMap<String, Vec<u8>> = fixture["small_objects"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, b)| {
            (
                id.clone(),
                base64::engine::general_purpose::STANDARD.decode(b.as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    // Flower's bytes where the fixture has them, ours (equal ids) for the big chunks.
    let mut fetch = |id: &str| -> mft_fl::Result<Vec<u8>> {
        Ok(small.get(id).cloned().unwrap_or_else(|| ours.object(id).unwrap().to_vec()))
    };
    let back = objects::inflate_message(&tree_of(&fixture["tree"]), Limits::default(), &mut fetch)
        .unwrap();
    assert_eq!(back.content.as_ref(), Some(&content));
    assert_eq!(back.metadata.message_id, fixture["message_id"].as_str().unwrap());
    assert_eq!(back.metadata.created_at, 1_760_000_000.5);
}
