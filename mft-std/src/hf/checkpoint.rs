//! Weights from safetensors files: a model's checkpoint (one `model.safetensors`, the files
//! its `model.safetensors.index.json` names, or the shards `model-00001-of-0000N.safetensors`)
//! into [`ModelWeights`], and a PEFT adapter_model.safetensors into the flat buffer of a
//! [`LoraLayout`].
//!
//! Each file is memory-mapped. A matrix stored in the element type the model uses stays in the
//! mapped file (zero-copy: only the pages a step touches become resident, and the kernel can
//! drop them again under memory pressure); any other matrix is converted once into its own
//! buffer. Norm weights and biases (a fraction of a percent of the parameters) are converted
//! into one f32 store. F32, F16 and BF16 tensors are read.
//!
//! Names are Hugging Face's ([`mft_models::Param::name`]), with the variants transformers
//! itself accepts: a checkpoint of the bare base model (no `transformer.` / `model.` prefix),
//! and the text tower of a multimodal Gemma 3 (`language_model.model.…`, or
//! `model.language_model.…` in newer versions). Tensors that are not parameters but that
//! transformers' checkpoints carry are skipped: a tied head's `lm_head.weight`, GPT-2's causal
//! mask buffers (`attn.bias`, `attn.masked_bias`), rotary `inv_freq` buffers, and a multimodal
//! Gemma 3's vision tower and projector. Any other tensor is refused: it means the config does
//! not describe the weights.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use mft_core::{Element, bf16, f16};
use mft_models::params::{GlobalParam, LayerParam, Slot};
use mft_models::{Family, LoraLayout, Matrices, Paging, Param, ParamLayout, Weights};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::paging::{PagedBlocks, PagedEmbeddings, Piece};

/// A model's weights in memory: the owned counterpart of [`Weights`]. Matrices are either one
/// owned store (random weights, full fine-tuning) or one slice per tensor (a loaded
/// checkpoint: mapped from its files where possible); vectors are one owned f32 store.
pub struct ModelWeights<T: 'static> {
    matrices: MatrixStorage<T>,
    /// The vector store ([`ParamLayout::vector_len`] elements).
    pub vectors: Vec<f32>,
    /// Where the blocks' matrices are, when they are paged in per block (then the matrix
    /// table holds only the others).
    paged: Option<Box<PagedBlocks<T>>>,
}

#[derive(Clone)]
enum MatrixStorage<T: 'static> {
    Store(Vec<T>),
    Table(TensorTable<T>),
}

/// Matrices one slice per tensor, borrowed from what the table shares ownership of: the
/// mapped files and the converted copies. Neither moves its bytes (a mapping stays where the
/// kernel put it; a boxed slice's heap buffer stays put), and neither is dropped or mutated
/// while a table holding the `Arc` lives, so the slices stay valid; they are handed out only
/// with the lifetime of a borrow of the table. Clones share the backing.
#[derive(Clone)]
struct TensorTable<T: 'static> {
    entries: Vec<&'static [T]>,
    _backing: Arc<Backing<T>>,
    mapped_bytes: usize,
}

/// What a [`TensorTable`]'s slices point into.
struct Backing<T> {
    _copies: Vec<Box<[T]>>,
    _maps: Vec<Mmap>,
}

impl<T: Element> ModelWeights<T> {
    /// Weights in two flat stores laid out by a [`ParamLayout`].
    pub fn from_stores(matrices: Vec<T>, vectors: Vec<f32>) -> ModelWeights<T> {
        ModelWeights { matrices: MatrixStorage::Store(matrices), vectors, paged: None }
    }

    /// The weights as the borrowed view the model reads.
    pub fn as_weights(&self) -> Weights<'_, T> {
        let matrices = match &self.matrices {
            MatrixStorage::Store(store) => Matrices::Store(store),
            MatrixStorage::Table(table) => Matrices::Table(&table.entries),
        };
        Weights { matrices, vectors: &self.vectors }
    }

    /// The flat matrix store, when the matrices are in one (see [`ModelWeights::stores_mut`]).
    pub fn matrix_store(&self) -> Option<&[T]> {
        match &self.matrices {
            MatrixStorage::Store(store) => Some(store),
            MatrixStorage::Table(_) => None,
        }
    }

    /// Both stores, writable; matrices held per tensor (or paged) are first gathered into one
    /// store laid out by `layout` (the layout they were loaded with), releasing the mapped
    /// files.
    ///
    /// # Panics
    /// When paged blocks cannot be read any more (their files changed since loading).
    pub fn stores_mut(&mut self, layout: &ParamLayout) -> (&mut [T], &mut [f32]) {
        if let MatrixStorage::Table(_) = &self.matrices {
            let store = self.gather(layout).expect("the checkpoint files are still readable");
            self.matrices = MatrixStorage::Store(store);
            self.paged = None;
        }
        let MatrixStorage::Store(store) = &mut self.matrices else { unreachable!("made above") };
        (store, &mut self.vectors)
    }

    /// The two flat stores (copies), laid out by `layout`, the layout the weights were loaded
    /// with.
    ///
    /// # Errors
    /// Paged blocks that cannot be read.
    pub fn to_stores(&self, layout: &ParamLayout) -> Result<(Vec<T>, Vec<f32>)> {
        Ok((self.gather(layout)?, self.vectors.clone()))
    }

    /// Every matrix in one store laid out by `layout`.
    fn gather(&self, layout: &ParamLayout) -> Result<Vec<T>> {
        let mut store = vec![T::default(); layout.matrix_len()];
        match &self.matrices {
            MatrixStorage::Store(matrices) => store.copy_from_slice(matrices),
            MatrixStorage::Table(table) => {
                for param in layout.params() {
                    let slot = layout.slot(param).expect("params() lists the layout's parameters");
                    let paged = self.paged.as_ref().is_some_and(|p| p.paging().covers(param));
                    if slot.matrix && !paged {
                        store[slot.range()]
                            .copy_from_slice(table.entries[layout.table_index(param)]);
                    }
                }
            }
        }
        if let Some(paged) = &self.paged {
            paged.read_into_store(layout, &mut store)?;
        }
        Ok(store)
    }

    /// These weights with their blocks' matrices paged in by `paged` (whose paging the matrix
    /// storage must match).
    pub(crate) fn with_paged(mut self, paged: PagedBlocks<T>) -> ModelWeights<T> {
        self.paged = Some(Box::new(paged));
        self
    }

    /// Block `layer`'s matrices (its part of the matrix store,
    /// [`ParamLayout::block_matrices`]) into `out`, from wherever they are.
    ///
    /// # Errors
    /// Paged matrices that cannot be read.
    pub(crate) fn read_block(
        &self,
        layout: &ParamLayout,
        layer: usize,
        out: &mut [T],
    ) -> Result<()> {
        let range = layout.block_matrices(layer);
        match (&self.matrices, &self.paged) {
            (MatrixStorage::Store(store), _) if store.len() == layout.matrix_len() => {
                out.copy_from_slice(&store[range]);
            }
            (_, Some(paged)) => paged.read_block_into(layout, layer, out)?,
            (MatrixStorage::Table(table), None) => {
                for param in
                    layout.params().filter(|p| matches!(p, Param::Layer(l, _) if *l == layer))
                {
                    let slot = layout.slot(param).expect("params() lists the layout's parameters");
                    if slot.matrix {
                        let at = slot.offset - range.start;
                        out[at..at + slot.len]
                            .copy_from_slice(table.entries[layout.table_index(param)]);
                    }
                }
            }
            (MatrixStorage::Store(_), None) => unreachable!("a partial store has paged blocks"),
        }
        Ok(())
    }

    /// The global matrices (the matrix store before the first block), copied.
    ///
    /// # Errors
    /// [`Error::Training`] when they are paged (full fine-tuning pages only the blocks).
    pub(crate) fn read_globals(&self, layout: &ParamLayout) -> Result<Vec<T>> {
        let len = layout.global_matrix_len();
        if self.paged.as_ref().is_some_and(|p| p.paging() != Paging::Blocks) {
            return Err(Error::Training {
                problem: "full fine-tuning pages the blocks only, not the embeddings".into(),
            });
        }
        match &self.matrices {
            MatrixStorage::Store(store) => Ok(store[..len].to_vec()),
            MatrixStorage::Table(table) => {
                let mut globals = vec![T::default(); len];
                for param in layout.params().filter(|p| matches!(p, Param::Global(_))) {
                    let slot = layout.slot(param).expect("params() lists the layout's parameters");
                    if slot.matrix {
                        globals[slot.range()]
                            .copy_from_slice(table.entries[layout.table_index(param)]);
                    }
                }
                Ok(globals)
            }
        }
    }

    /// The blocks' matrices paged in per block, when they are.
    pub fn paged(&self) -> Option<&PagedBlocks<T>> {
        self.paged.as_deref()
    }

    /// The weights the model reads, and the paged blocks (when there are) to page in the
    /// rest: what a step needs, borrowed at once.
    pub fn for_step(&mut self) -> (Weights<'_, T>, Option<&mut PagedBlocks<T>>) {
        let matrices = match &self.matrices {
            MatrixStorage::Store(store) => Matrices::Store(store),
            MatrixStorage::Table(table) => Matrices::Table(&table.entries),
        };
        (Weights { matrices, vectors: &self.vectors }, self.paged.as_deref_mut())
    }

    /// Bytes of matrices read in place from mapped checkpoint files (0 when none are).
    pub fn mapped_bytes(&self) -> usize {
        match &self.matrices {
            MatrixStorage::Store(_) => 0,
            MatrixStorage::Table(table) => table.mapped_bytes,
        }
    }
}

impl<T: 'static> std::fmt::Debug for ModelWeights<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, matrices) = match &self.matrices {
            MatrixStorage::Store(store) => ("store", store.len()),
            MatrixStorage::Table(table) => ("table", table.entries.iter().map(|e| e.len()).sum()),
        };
        f.debug_struct("ModelWeights")
            .field("matrices", &format_args!("{matrices} in a {kind}"))
            .field("vectors", &self.vectors.len())
            .finish()
    }
}

/// File name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The weight files of a checkpoint directory: `model.safetensors`; else the files its
/// `model.safetensors.index.json` names (each must exist and hold the tensors the index puts
/// in it); else every shard `model-NNNNN-of-MMMMM.safetensors` in order (all `MMMMM` of them
/// must be there). A path to a `.safetensors` file is returned as it is.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        return indexed_files(dir, &index);
    }
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    let mut shards: Vec<(usize, usize, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if let Some((index, count)) = name.to_str().and_then(shard_number) {
            shards.push((index, count, entry.path()));
        }
    }
    let problem = |problem: String| Error::Checkpoint { path: dir.to_path_buf(), problem };
    let Some(&(_, count, _)) = shards.first() else {
        return Err(problem(
            "no model.safetensors, no model.safetensors.index.json and no \
             model-NNNNN-of-NNNNN.safetensors shards"
                .into(),
        ));
    };
    if let Some((_, other, _)) = shards.iter().find(|s| s.1 != count) {
        return Err(problem(format!("shards disagree on their count ({count} and {other})")));
    }
    shards.sort_by_key(|s| s.0);
    shards.dedup_by_key(|s| s.0);
    for (expected, (index, _, _)) in (1..=count).zip(&shards) {
        if *index != expected {
            return Err(problem(format!("shard {expected} of {count} is missing")));
        }
    }
    if shards.len() < count {
        return Err(problem(format!("shard {} of {count} is missing", shards.len() + 1)));
    }
    Ok(shards.into_iter().map(|(_, _, path)| path).collect())
}

/// The files a `model.safetensors.index.json` names in its `weight_map` (tensor → file name in
/// the same directory), in name order, after checking that each exists and holds the tensors
/// the index puts in it.
fn indexed_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index)
        .map_err(|source| Error::Io { path: index.to_path_buf(), source })?;
    let by_file = parse_index(&text, index)?;
    let mut files = Vec::with_capacity(by_file.len());
    for (file, tensors) in by_file {
        let path = dir.join(&file);
        if !path.is_file() {
            return Err(Error::Checkpoint {
                path: index.to_path_buf(),
                problem: format!("names {file}, which is not in {}", dir.display()),
            });
        }
        let map = map_file(&path)?;
        let (_, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|source| Error::Safetensors { path: path.clone(), source })?;
        if let Some(absent) = tensors.iter().find(|t| metadata.info(t).is_none()) {
            return Err(Error::Checkpoint {
                path: index.to_path_buf(),
                problem: format!("puts tensor {absent} in {file}, which does not hold it"),
            });
        }
        files.push(path);
    }
    Ok(files)
}

/// The `weight_map` of the text of a `model.safetensors.index.json`: each file it names (a
/// plain `.safetensors` file name, in name order) with the tensors it puts there. `index` is
/// the file the text came from, named in errors.
///
/// # Errors
/// Text that is not JSON, a missing or malformed `weight_map`, a file name that is not a
/// `.safetensors` file of the index's directory, or no tensors at all.
pub fn parse_index(text: &str, index: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let json: Value = serde_json::from_str(text).map_err(|source| Error::Json {
        path: index.to_path_buf(),
        line: source.line(),
        column: source.column(),
        source,
    })?;
    let field = |problem: &str| Error::Config {
        path: index.to_path_buf(),
        field: "weight_map".into(),
        problem: problem.into(),
    };
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| field("missing, or not an object of tensor names to file names"))?;
    let mut by_file: BTreeMap<String, Vec<String>> = Default::default();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| field(&format!("{tensor}: not a file name")))?;
        let plain = Path::new(file).file_name().is_some_and(|name| name == file);
        if !plain || !file.ends_with(".safetensors") {
            return Err(field(&format!(
                "{tensor}: \"{file}\" is not a .safetensors file name in the index's directory"
            )));
        }
        by_file.entry(file.to_string()).or_default().push(tensor.clone());
    }
    if by_file.is_empty() {
        return Err(field("names no tensors"));
    }
    Ok(by_file)
}

/// `(index, count)` of a shard's file name `model-00002-of-00003.safetensors`.
fn shard_number(name: &str) -> Option<(usize, usize)> {
    let stem = name.strip_prefix("model-")?.strip_suffix(".safetensors")?;
    let (index, count) = stem.split_once("-of-")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(index) && digits(count)) {
        return None;
    }
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (1..=count).contains(&index).then_some((index, count))
}

/// Loads every parameter of `layout` from the checkpoint `files` (as [`checkpoint_files`]
/// lists them), checking each tensor's shape against the layout: matrices stored as `T` stay
/// in the mapped files, other matrices are converted to `T`, vectors to f32.
///
/// # Errors
/// A file that cannot be read or is no valid safetensors file; a tensor of the wrong shape or
/// dtype; a parameter in none of the files; a tensor that is not a parameter
/// ([`Error::UnexpectedTensor`]). Each names its file and tensor.
pub fn load_weights<T: Element>(
    files: &[PathBuf],
    layout: &ParamLayout,
) -> Result<ModelWeights<T>> {
    load(files, layout, Paging::Off)
}

/// [`load_weights`] for paging: the matrices `paging` covers (the blocks', and with
/// [`Paging::BlocksAndEmbeddings`] the token embedding and the head) are not read but located
/// (see [`PagedBlocks`]); the other matrices and the vectors are read with `pread` into owned
/// buffers, in chunks, so that loading never holds a file's pages mapped (the process's peak
/// memory is what it keeps, not the files).
///
/// # Errors
/// As [`load_weights`].
pub fn load_weights_paged<T: Element>(
    files: &[PathBuf],
    layout: &ParamLayout,
    paging: Paging,
) -> Result<ModelWeights<T>> {
    load(files, layout, paging)
}

fn load<T: Element>(
    files: &[PathBuf],
    layout: &ParamLayout,
    paging: Paging,
) -> Result<ModelWeights<T>> {
    let paged = paging != Paging::Off;
    let family = layout.family();
    let hidden = hidden_width(layout);
    // Every name a parameter may have in the files, mapped to the parameter.
    let mut wanted: HashMap<String, Param> = HashMap::new();
    for param in layout.params() {
        for name in aliases(&param.name(family).to_string()) {
            wanted.entry(name).or_insert(param);
        }
    }
    let tied_head = layout.slot(Param::Global(GlobalParam::LmHead)).is_none();
    let mut vectors = vec![0.0f32; layout.vector_len()];
    let mut entries: Vec<&'static [T]> = vec![&[]; layout.table_len()];
    let mut copies: Vec<Box<[T]>> = Vec::new();
    let mut maps: Vec<Mmap> = Vec::with_capacity(files.len());
    let mut mapped_bytes = 0;
    let mut loaded: HashSet<Param> = HashSet::new();
    let mut pieces: Vec<Vec<Piece>> = vec![Vec::new(); layout.layers()];
    let mut embedding_pieces: Vec<Piece> = Vec::new();
    let mut opened: Vec<File> = Vec::new();
    for path in files {
        let map = map_file(path)?;
        let (header, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|source| Error::Safetensors { path: path.clone(), source })?;
        // read_metadata has checked that the tensors tile the rest of the file exactly.
        let data = &map[8 + header..];
        // Converted tensors are read with pread, not through the map, so that their stored
        // bytes never become resident (only tensors used in place are read from the map).
        let file = File::open(path).map_err(|source| Error::Io { path: path.clone(), source })?;
        opened.push(file);
        let file = opened.last().expect("pushed above");
        let mut used_in_place = false;
        for name in metadata.offset_keys() {
            let Some(&param) = wanted.get(&name) else {
                if skipped_tensor(&name, family, tied_head) {
                    continue;
                }
                return Err(Error::UnexpectedTensor { path: path.clone(), tensor: name });
            };
            if loaded.contains(&param) {
                continue;
            }
            let info = metadata.info(&name).expect("offset_keys lists the header's tensors");
            let slot = layout.slot(param).expect("params() lists the layout's parameters");
            let tensor = Tensor {
                path,
                name: &name,
                dtype: info.dtype,
                shape: &info.shape,
                bytes: &data[info.data_offsets.0..info.data_offsets.1],
                offset: (8 + header + info.data_offsets.0) as u64,
            };
            tensor.expect_shape(&hf_shape(param, slot, hidden, family))?;
            let source = tensor.source_type()?;
            // Paged, the blocks' matrices are only located; unpaged, matrices stored as `T`
            // are used in place; everything else is read (converted) with pread.
            let in_place = if paged { None } else { tensor.in_place::<T>() };
            let piece = || Piece {
                param,
                file: opened.len() - 1,
                offset: tensor.offset,
                stored: source,
                elements: slot.len,
            };
            match param {
                Param::Layer(layer, _) if paging.covers(param) && slot.matrix => {
                    pieces[layer].push(piece());
                }
                Param::Global(_) if paging.covers(param) => embedding_pieces.push(piece()),
                _ if !slot.matrix => {
                    read_converted(file, tensor.offset, source, &mut vectors[slot.range()], path)?;
                }
                _ => {
                    let matrix = match in_place {
                        Some(bytes) => {
                            mapped_bytes += tensor.bytes.len();
                            used_in_place = true;
                            bytes
                        }
                        None => {
                            let mut copy = vec![T::default(); slot.len].into_boxed_slice();
                            read_converted(file, tensor.offset, source, &mut copy, path)?;
                            copies.push(copy);
                            copies.last().expect("pushed above")
                        }
                    };
                    // SAFETY: the slice is in `map` (which moves into `maps` below when used in
                    // place) or in a boxed copy in `copies`; both live, unmoved in memory and
                    // unwritten, as long as the table (see TensorTable).
                    entries[layout.table_index(param)] =
                        unsafe { std::slice::from_raw_parts(matrix.as_ptr(), matrix.len()) };
                }
            }
            loaded.insert(param);
        }
        if used_in_place {
            maps.push(map);
        }
    }
    if let Some(missing) = layout.params().find(|p| !loaded.contains(p)) {
        return Err(Error::MissingTensor {
            files: files.to_vec(),
            tensor: missing.name(family).to_string(),
        });
    }
    let backing = Arc::new(Backing { _copies: copies, _maps: maps });
    let table = TensorTable { entries, _backing: backing, mapped_bytes };
    let paged_blocks = paged.then(|| {
        let files = files.iter().cloned().zip(opened).collect();
        let embeddings = paged_embeddings(embedding_pieces, hidden);
        Box::new(PagedBlocks::new(files, pieces, embeddings))
    });
    // (Unpaged, the opened files close here; the maps that are used stay.)
    Ok(ModelWeights { matrices: MatrixStorage::Table(table), vectors, paged: paged_blocks })
}

/// The token embedding and the head among `pieces` (the embedding twice when the head is tied),
/// or `None` when they are not paged.
fn paged_embeddings(pieces: Vec<Piece>, hidden: usize) -> Option<PagedEmbeddings> {
    let find =
        |wanted: GlobalParam| pieces.iter().find(|p| p.param == Param::Global(wanted)).cloned();
    let embed = find(GlobalParam::Embed)?;
    let head = find(GlobalParam::LmHead).unwrap_or_else(|| embed.clone());
    Some(PagedEmbeddings { embed, head, hidden })
}

/// Reads `dst.len()` elements stored as `stored` at `offset` of `file` into `dst`, converting
/// chunk by chunk (a bounded buffer, whatever the tensor's size).
pub(crate) fn read_converted<T: Element>(
    file: &File,
    offset: u64,
    stored: mft_core::DType,
    dst: &mut [T],
    path: &Path,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if stored == T::DTYPE && cfg!(target_endian = "little") {
        return file.read_exact_at(bytemuck::cast_slice_mut(dst), offset).map_err(io);
    }
    const CHUNK: usize = 1 << 16;
    let size = stored.size_bytes();
    let mut buffer = vec![0u8; CHUNK * size];
    for (i, chunk) in dst.chunks_mut(CHUNK).enumerate() {
        let bytes = &mut buffer[..chunk.len() * size];
        file.read_exact_at(bytes, offset + (i * CHUNK * size) as u64).map_err(io)?;
        convert_bytes(bytes, stored, chunk);
    }
    Ok(())
}

/// `dst[i] = element i of little-endian `bytes` stored as `stored``, converted to `T`.
pub(crate) fn convert_bytes<T: Element>(bytes: &[u8], stored: mft_core::DType, dst: &mut [T]) {
    debug_assert_eq!(bytes.len(), dst.len() * stored.size_bytes());
    if stored == T::DTYPE && cfg!(target_endian = "little") {
        bytemuck::cast_slice_mut::<T, u8>(dst).copy_from_slice(bytes);
        return;
    }
    match stored {
        mft_core::DType::F32 => widen(bytes, dst, f32::from_le_bytes),
        mft_core::DType::F16 => widen(bytes, dst, |b| f16::from_le_bytes(b).to_f32()),
        mft_core::DType::BF16 => widen(bytes, dst, |b| bf16::from_le_bytes(b).to_f32()),
    }
}

/// Whether `name` is a tensor transformers' checkpoints carry that is no parameter mft reads.
fn skipped_tensor(name: &str, family: Family, tied_head: bool) -> bool {
    let buffer = match family {
        Family::Gpt2 => name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias"),
        Family::Qwen2 | Family::Gemma3 => name.ends_with(".rotary_emb.inv_freq"),
    };
    let head = tied_head && aliases("lm_head.weight").iter().any(|alias| alias == name);
    let vision = family == Family::Gemma3
        && ["vision_tower.", "multi_modal_projector."].iter().any(|tower| {
            name.starts_with(tower)
                || name.strip_prefix("model.").is_some_and(|n| n.starts_with(tower))
        });
    buffer || head || vision
}

/// Loads every adapter of `layout` from a PEFT adapter_model.safetensors, checking shapes
/// (`A` `[r, in]`, `B` `[out, r]`); the result is the flat LoRA buffer.
pub fn load_adapters(path: &Path, layout: &LoraLayout) -> Result<Vec<f32>> {
    let map = map_file(path)?;
    parse_adapters(&map, path, layout)
}

/// [`load_adapters`] on the bytes of an adapter_model.safetensors; `path` is the file they
/// came from, named in errors.
///
/// # Errors
/// Bytes that are no valid safetensors file; a missing adapter tensor, or one of the wrong
/// shape or dtype.
pub fn parse_adapters(bytes: &[u8], path: &Path, layout: &LoraLayout) -> Result<Vec<f32>> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|source| Error::Safetensors { path: path.to_path_buf(), source })?;
    let rank = layout.config().rank;
    let mut buffer = vec![0.0f32; layout.len()];
    for (layer, param, is_b) in layout.tensors() {
        let canonical = layout.name(layer, param, is_b).to_string();
        let (name, view) = aliases(&canonical)
            .into_iter()
            .find_map(|name| file.tensor(&name).ok().map(|view| (name, view)))
            .ok_or_else(|| Error::MissingTensor {
                files: vec![path.to_path_buf()],
                tensor: canonical.clone(),
            })?;
        let slot = layout.slot(layer, param).expect("tensors() lists adapted projections");
        let expected = if is_b { [slot.out_features, rank] } else { [rank, slot.in_features] };
        let tensor = Tensor {
            path,
            name: &name,
            dtype: view.dtype(),
            shape: view.shape(),
            bytes: view.data(),
            offset: 0, // Not read by offset.
        };
        tensor.expect_shape(&expected)?;
        tensor.convert_into(&mut buffer[layout.range(layer, param, is_b)])?;
    }
    Ok(buffer)
}

/// Maps `path` read-only.
fn map_file(path: &Path) -> Result<Mmap> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the map is read-only. A checkpoint truncated or rewritten by another process
    // while mft has it mapped is outside what mft supports (as for every mmap-based reader of
    // safetensors, transformers' included): training reads weights from the map throughout.
    unsafe { Mmap::map(&file) }.map_err(io)
}

/// The names `canonical` may have in a file: itself; without the base-model prefix
/// (`transformer.` / `model.`: a checkpoint of the bare model); the text tower of a multimodal
/// Gemma 3 (`language_model.model.…`, `model.language_model.…`, `language_model.lm_head.…`).
/// A PEFT prefix `base_model.model.` stays in front.
fn aliases(canonical: &str) -> Vec<String> {
    let (peft, name) = match canonical.strip_prefix("base_model.model.") {
        Some(rest) => ("base_model.model.", rest),
        None => ("", canonical),
    };
    let mut names = vec![name.to_string()];
    if let Some(bare) = name.strip_prefix("transformer.") {
        names.push(bare.to_string());
    } else if let Some(bare) = name.strip_prefix("model.") {
        names.push(bare.to_string());
        names.push(format!("language_model.model.{bare}"));
        names.push(format!("model.language_model.{bare}"));
    } else {
        names.push(format!("language_model.{name}"));
    }
    names.into_iter().map(|n| format!("{peft}{n}")).collect()
}

/// Width of the residual stream: the length of the final norm's weight.
fn hidden_width(layout: &ParamLayout) -> usize {
    layout.slot(Param::Global(GlobalParam::FinalNorm)).expect("every model has a final norm").len
}

/// The shape of `param` in a Hugging Face checkpoint. Every projection has the residual width
/// on one side (its input, or for the attention and MLP outputs its output), so the layout's
/// element count and `hidden` give both sides. Linear weights are `[out, in]`, GPT-2's Conv1D
/// weights `[in, out]`, tables `[rows, hidden]`, vectors 1-D.
fn hf_shape(param: Param, slot: Slot, hidden: usize, family: Family) -> Vec<usize> {
    if !slot.matrix {
        return vec![slot.len];
    }
    let other = slot.len / hidden.max(1);
    match param {
        Param::Global(_) => vec![other, hidden],
        Param::Layer(_, p) => {
            let (inp, out) = match p {
                LayerParam::O | LayerParam::Down => (other, hidden),
                _ => (hidden, other),
            };
            if family == Family::Gpt2 { vec![inp, out] } else { vec![out, inp] }
        }
    }
}

/// One tensor of a mapped file.
struct Tensor<'a> {
    path: &'a Path,
    name: &'a str,
    dtype: Dtype,
    shape: &'a [usize],
    bytes: &'a [u8],
    /// Where the bytes start in the file.
    offset: u64,
}

impl Tensor<'_> {
    fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape == expected {
            return Ok(());
        }
        Err(Error::TensorShape {
            path: self.path.to_path_buf(),
            tensor: self.name.to_string(),
            expected: expected.to_vec(),
            actual: self.shape.to_vec(),
        })
    }

    /// The tensor's elements where they are, when it is stored as `T` (little-endian, aligned).
    fn in_place<T: Element>(&self) -> Option<&[T]> {
        let same = matches!(
            (self.dtype, T::DTYPE),
            (Dtype::F32, mft_core::DType::F32)
                | (Dtype::F16, mft_core::DType::F16)
                | (Dtype::BF16, mft_core::DType::BF16)
        );
        if !same || cfg!(target_endian = "big") {
            return None;
        }
        bytemuck::try_cast_slice(self.bytes).ok()
    }

    /// The stored element type, if mft reads it.
    fn source_type(&self) -> Result<mft_core::DType> {
        match self.dtype {
            Dtype::F32 => Ok(mft_core::DType::F32),
            Dtype::F16 => Ok(mft_core::DType::F16),
            Dtype::BF16 => Ok(mft_core::DType::BF16),
            other => Err(Error::TensorDtype {
                path: self.path.to_path_buf(),
                tensor: self.name.to_string(),
                dtype: other.to_string(),
            }),
        }
    }

    /// Converts the tensor (whose element count matches `dst`) into `dst`.
    fn convert_into<T: Element>(&self, dst: &mut [T]) -> Result<()> {
        convert_bytes(self.bytes, self.source_type()?, dst);
        Ok(())
    }
}

/// `dst[i] = T::from_f32(decode(bytes of element i))`.
fn widen<T: Element, const N: usize>(bytes: &[u8], dst: &mut [T], decode: impl Fn([u8; N]) -> f32) {
    for (chunk, d) in bytes.chunks_exact(N).zip(dst) {
        let mut raw = [0u8; N];
        raw.copy_from_slice(chunk);
        *d = T::from_f32(decode(raw));
    }
}

#[cfg(test)]
mod tests {
    use mft_models::ModelConfig;

    use super::*;

    /// The shapes derived from the layout alone agree with the config's `features`.
    #[test]
    fn derived_shapes_match_features() {
        let mut qwen = ModelConfig::qwen2_5_0_5b();
        qwen.tie_embeddings = false;
        for config in [ModelConfig::gpt2(), qwen, ModelConfig::gemma3_270m()] {
            let layout = ParamLayout::new(&config);
            let hidden = hidden_width(&layout);
            assert_eq!(hidden, config.hidden);
            for param in layout.params() {
                let slot = layout.slot(param).unwrap();
                let shape = hf_shape(param, slot, hidden, config.family);
                let expected = match param {
                    Param::Layer(_, p) if p.is_matrix() => {
                        let (inp, out) = p.features(&config).unwrap();
                        if config.family == Family::Gpt2 { vec![inp, out] } else { vec![out, inp] }
                    }
                    Param::Layer(_, p) => vec![p.numel(&config)],
                    Param::Global(GlobalParam::Positions) => {
                        vec![config.max_positions, config.hidden]
                    }
                    Param::Global(g) if g.is_matrix() => vec![config.vocab, config.hidden],
                    Param::Global(g) => vec![g.numel(&config)],
                };
                assert_eq!(shape, expected, "{}", param.name(config.family));
            }
        }
    }

    /// The slices of a mapped load point into the mapped files themselves.
    #[test]
    fn mapped_matrices_point_into_the_files() {
        let config = ModelConfig::gpt2_with(8, 2, 2);
        let layout = ParamLayout::new(&config);
        let weights = crate::random::random_weights::<f32>(&config, 3);
        let dir = tempfile::tempdir().unwrap();
        let view = weights.as_weights();
        crate::export::export_hf_snapshot(dir.path(), &config, &layout, view, None).unwrap();
        let loaded = load_weights::<f32>(&checkpoint_files(dir.path()).unwrap(), &layout).unwrap();
        let MatrixStorage::Table(table) = &loaded.matrices else { panic!("not a table") };
        let maps: Vec<_> = table._backing._maps.iter().map(|m| m.as_ptr_range()).collect();
        let mut matrices = 0;
        for param in layout.params().filter(|p| layout.slot(*p).unwrap().matrix) {
            let entry = table.entries[layout.table_index(param)].as_ptr_range();
            let start = entry.start.cast::<u8>();
            let end = entry.end.cast::<u8>();
            assert!(maps.iter().any(|m| m.start <= start && end <= m.end), "{param:?}");
            matrices += 1;
        }
        assert!(matrices > 4);
        assert_eq!(
            loaded.as_weights().matrix(&layout, Param::Global(GlobalParam::Embed)),
            view.matrix(&layout, Param::Global(GlobalParam::Embed))
        );
    }

    #[test]
    fn shard_names() {
        assert_eq!(shard_number("model-00002-of-00003.safetensors"), Some((2, 3)));
        assert_eq!(shard_number("model-00004-of-00003.safetensors"), None);
        assert_eq!(shard_number("model-x-of-00003.safetensors"), None);
        assert_eq!(shard_number("model.safetensors"), None);
    }

    #[test]
    fn gemma_aliases_cover_multimodal_names() {
        let names = aliases("model.layers.0.mlp.up_proj.weight");
        assert!(names.contains(&"language_model.model.layers.0.mlp.up_proj.weight".to_string()));
        assert!(names.contains(&"model.language_model.layers.0.mlp.up_proj.weight".to_string()));
        assert_eq!(aliases("lm_head.weight")[1], "language_model.lm_head.weight");
        let peft = aliases("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");
        assert_eq!(peft[1], "base_model.model.h.0.attn.c_attn.lora_A.weight");
    }
}
