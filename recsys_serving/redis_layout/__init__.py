"""The Redis layout: key names, encodings, the writer and the reader.

Every published version lives under its own prefix and is never modified once complete.
``{p}`` is the deployment's Redis Cluster hash tag (one slot for the pointers, counters, overrides
and metas, which the switch/rollback scripts use together); ``p:`` keys carry no tag and spread
over every slot (see :mod:`.keys` and docs/scaling.md):

    {p}:current                     version being served (string)
    {p}:previous                    version kept for rollback
    {p}:seq                         INCR counter that numbers versions
    {p}:channel                     pub/sub: "version:<v>", "rollback:<v>", "control", "flush"
    {p}:control                     hash of admin overrides: "ab_experiment" -> JSON,
                                    "default_model@<v>" -> model name (scoped to one version)
    {p}:item_overrides              hash of live item overrides (item id -> state, "generation")
    p:feedback                      stream of feedback events
    {p}:v:<v>:meta                  msgpack: models, metrics, families, default model, experiment
                                    (written last: a version without meta is incomplete)
    p:v:<v>:vocab:<family>          little-endian int64 array: item code -> external item id
    p:v:<v>:bounds:<family>         little-endian int64 array: first id of each bucket
    p:v:<v>:blob:<family>:<b>       bucket blob of per-id lists (see below)
    p:v:<v>:popular                 hash "all" | "<category id>" -> int64 items + float32 scores
    p:v:<v>:items                   hash "ids","category","price","available" -> raw arrays
    p:v:<v>:weights:<m>:<a>:<c>     chunk c (4 MiB) of array a of model m's session network
                                    (GRU4Rec: item ids, embeddings, gates, output layer; the
                                    spec - dtype, shape, chunks, digest - is in the meta)
    {p}:pages:current               publish n of the web pages' reports being shown
    {p}:pages:seq                   INCR counter that numbers those publishes
    p:pages:<n>                     hash "doc:<page>" -> JSON, "chart:<name>" -> PNG (see .pages)

Families: ``rec:<model>`` (per-user top-N), ``sim:<model>`` (per-item neighbours), ``hist``.

Per-id lists are grouped into buckets of contiguous ids stored as one string each (the first
id of every bucket is in ``p:v:<v>:bounds:<family>``), so a list costs 12 bytes of index
instead of a hash entry's ~60, and blobs are filled up to an allocator size class:

    u32 count | count x i64 ids (ascending) | (count+1) x u32 offsets into the blob | payloads

A Lua script binary-searches the ids and returns one payload in a single round trip.
A list payload is ``u8 n | u8 flags | f32 hi | f32 lo | scores | n varint item codes``;
codes index the family's vocabulary, which is ordered by frequency so that the items most lists
share take one or two bytes. Scores are quantised linearly between the list's own min and max
(error at most (hi - lo) / 510), stored as nibble-sized drops when they never increase down
the list; the order of items is stored exactly.

Modules: :mod:`.keys` (key names), :mod:`.codec` (byte formats, no Redis), :mod:`.validation`
(bundle contract), :mod:`.writer` (publish, cleanup, rollback; sync client), :mod:`.reader`
(the service's async reads), :mod:`.weights` (a session network's arrays as chunks),
:mod:`.pages` (the web pages' reports: writer and reader),
:mod:`.scripts` (the ``lua/*.lua`` scripts, read once) and :mod:`.clients` (one server or a
Redis Cluster from ``REDIS_URL``, and the few calls that differ between them).
Everything public is re-exported here: ``from recsys_serving.redis_layout import ...``.
"""

from recsys_serving.redis_layout.codec import (
    LIST_HEADER,
    MAX_HISTORY,
    MAX_LIST_LENGTH,
    ItemTable,
    Vocab,
    bucket_blob,
    bucket_of,
    decode_history,
    decode_items,
    decode_list,
    decode_meta,
    decode_pairs,
    encode_history,
    encode_items,
    encode_lists,
    encode_meta,
    encode_pairs,
    event_codes,
)
from recsys_serving.redis_layout.keys import (
    CONTROL_AB,
    HIST_FAMILY,
    Keys,
    control_default_field,
    rec_family,
    sim_family,
)
from recsys_serving.redis_layout.reader import LayoutReader, LayoutState
from recsys_serving.redis_layout.scripts import LOOKUP_LUA, ROLLBACK_LUA, SWITCH_LUA
from recsys_serving.redis_layout.validation import validate_bundle, validate_experiment
from recsys_serving.redis_layout.weights import (
    CHUNK_BYTES,
    decode_array,
    encode_weights,
    weight_arrays,
    weights_nbytes,
)
from recsys_serving.redis_layout.writer import (
    DEFAULT_BLOB_BYTES,
    FORMAT_VERSION,
    ProgressHook,
    PublishReport,
    delete_prefix,
    delete_stale_versions,
    publish_bundle,
    rollback,
)

__all__ = [
    "CHUNK_BYTES", "decode_array", "encode_weights", "weight_arrays", "weights_nbytes",
    "CONTROL_AB", "DEFAULT_BLOB_BYTES", "FORMAT_VERSION", "HIST_FAMILY", "LIST_HEADER",
    "LOOKUP_LUA", "MAX_HISTORY", "MAX_LIST_LENGTH", "ROLLBACK_LUA", "SWITCH_LUA", "ItemTable",
    "Keys", "LayoutReader", "LayoutState", "ProgressHook", "PublishReport", "Vocab",
    "bucket_blob", "bucket_of", "control_default_field", "decode_history", "decode_items",
    "decode_list", "decode_meta", "decode_pairs", "delete_prefix", "delete_stale_versions",
    "encode_history", "encode_items", "encode_lists", "encode_meta", "encode_pairs",
    "event_codes", "publish_bundle", "rec_family", "rollback", "sim_family", "validate_bundle",
    "validate_experiment",
]  # fmt: skip
