"""Text classification with ``LinearModel``: hashed bag of words in sharded svmlight files.

    mpiexec -n 4 python examples/linear_model.py                  # files in a temporary folder
    mpiexec -n 4 python examples/linear_model.py --dir text-out   # ... or in text-out/

The script first makes its data: 4,000 short "documents" about sport or cooking (words
drawn from a topic list, a shared list of common words and, as noise, the other topic),
turned into features by the hashing trick: each word goes to one of 2**12 columns by a
CRC32 hash, the value is ``log(1 + count)``, each row scaled to unit length. It writes them
as svmlight shards ``DIR/train/part-0000{0..3}.svm`` (the ranks write them in turn) and
1,000 more documents as ``DIR/test.svm``, the layout a real pipeline's files come in.

Then the part to copy: every rank reads only its own byte range of the shards
(``load_shard``), ``LinearModel("logistic")`` trains on all of them together (L-BFGS on
the allreduced gradient; every rank ends with the same model), ``score`` counts the test
documents of every rank, ``predict`` labels new text, and ``save``/``load`` write and read
the model (one ``.npz``; it loads at any rank count, or in a serial script). The result
does not depend on the number of ranks (up to rounding). Rank 0 prints::

    wrote 4 training shards (4000 documents, 34.3 words each) and 1000 test documents
    trained by lbfgs: 17 iterations, objective 0.3428790876
    test accuracy 0.958000
    predict 'the coach was happy with the team' -> sport
    predict 'bake the bread in a hot oven' -> cooking
    saved model.npz; loaded on 1 rank: same predictions yes
"""

import argparse
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from mpi4py import MPI

from mpiml.data import load_shard
from mpiml.data.writers import svmlight_bytes
from mpiml.runtime.files import atomic_write
from mpiml.sgd import LinearModel

SPORT = ("match goal team coach league score season player win referee stadium fans striker keeper "
         "penalty final cup champion defence attack training injury transfer tournament").split()
COOKING = ("recipe oven flour sugar bake butter salt pan dinner taste bread sauce garlic onion roast "
           "simmer dough spoon kitchen spices cheese lemon pepper soup").split()
COMMON = ("the a of and to in is it that was for on with as at by this from they we you but had "
          "his her have not are one all were when there been more new also after very good day").split()
TOPICS = (COOKING, SPORT)              # label 0 = cooking, 1 = sport
N_FEATURES = 2 ** 12
N_TRAIN, N_TEST, SHARDS = 4000, 1000, 4
ALPHA = 1e-3                           # L2 penalty on the mean loss (scikit-learn's C = 1 / (ALPHA n))

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--dir", help="where the svmlight files and model.npz go (default: a temporary folder)")
args = parser.parse_args()
comm = MPI.COMM_WORLD
folder = Path(comm.bcast(args.dir or (tempfile.mkdtemp(prefix="mpiml-") if comm.rank == 0 else None)))


def say(text):
    if comm.rank == 0:
        print(text, flush=True)


def document(index, seed):
    """``(label, text)`` of document ``index``: the same on any rank, at any rank count."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(2))
    words = []
    for _ in range(rng.integers(15, 55)):
        u = rng.random()
        source = TOPICS[label] if u < 0.2 else TOPICS[1 - label] if u < 0.25 else COMMON
        words.append(source[rng.integers(len(source))])
    return label, " ".join(words)


def hashed(texts):
    """The hashing trick: CSR rows of log(1 + word count) in CRC32 columns, each of unit length."""
    indptr, indices, values = [0], [], []
    for text in texts:
        counts = Counter(zlib.crc32(word.encode()) % N_FEATURES for word in text.lower().split())
        columns = np.array(sorted(counts), dtype=np.int64)
        row = np.log1p([counts[c] for c in columns])
        indices.extend(columns)
        values.extend(row / np.linalg.norm(row))
        indptr.append(len(indices))
    return sp.csr_matrix((values, indices, indptr), shape=(len(texts), N_FEATURES))


def write_svmlight(path, first, count, seed):
    """Documents ``first .. first+count-1`` as svmlight lines (atomically: no rank reads half a file)."""
    labels, texts = zip(*(document(i, seed) for i in range(first, first + count)))
    with atomic_write(path) as handle:
        handle.write(svmlight_bytes(hashed(texts), np.array(labels, dtype=np.float64)))
    return sum(len(t.split()) for t in texts)


# ---- make the data (a real job starts with files like these) -----------------------------
train_dir = folder / "train"
per_shard = N_TRAIN // SHARDS
words = sum(write_svmlight(train_dir / f"part-{s:05d}.svm", s * per_shard, per_shard, seed=0)
            for s in range(comm.rank, SHARDS, comm.size))   # shard s by rank s mod p
if comm.rank == comm.size - 1:
    write_svmlight(folder / "test.svm", 0, N_TEST, seed=1)
words = comm.allreduce(words)
comm.Barrier()  # every file is complete before any rank reads
say(f"wrote {SHARDS} training shards ({N_TRAIN} documents, {words / N_TRAIN:.1f} words each) "
    f"and {N_TEST} test documents")

# ---- train, evaluate, predict, save -------------------------------------------------------
# A folder of shards reads as their concatenation; rank r gets a contiguous byte range of it
# (whatever the number of shards). n_features: the hash width, not the largest index seen.
train = load_shard(str(train_dir), n_features=N_FEATURES)
test = load_shard(str(folder / "test.svm"), n_features=N_FEATURES)

model = LinearModel("logistic", alpha=ALPHA, tol=1e-6)  # strategy "auto": L-BFGS for a smooth loss
model.fit(train.X, train.y, where=train.where)            # where: a bad label's file and line
last = model.history_[-1]
say(f"trained by {model.config_.strategy}: {last['lbfgs_iterations']} iterations, "
    f"objective {last['train_loss']:.10f}")
say(f"test accuracy {model.score(test.X, test.y):.6f}")  # collective: counts every rank's rows

new = ["the coach was happy with the team", "bake the bread in a hot oven"]
labels = model.predict(hashed(new))                        # local: every rank has the whole model
for text, label in zip(new, labels):
    say(f"predict {text!r} -> {'sport' if label == 1 else 'cooking'}")

model.save(folder / "model.npz")                           # rank 0 writes it
comm.Barrier()
if comm.rank == 0:
    again = LinearModel.load(folder / "model.npz", comm=MPI.COMM_SELF)
    same = np.array_equal(again.predict(test.X), model.predict(test.X))
    print(f"saved model.npz; loaded on 1 rank: same predictions {'yes' if same else 'NO'}")
