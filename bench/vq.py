"""Benchmark: patch VQ codebook size vs reconstruction PSNR and encode speed; VQ-VAE PSNR.

Generates photo-like synthetic images (smooth random fields + shapes + sensor noise,
256 x 256), fits mmshard's patch VQ tokenizer (FAISS k-means on PCA-projected 16 x 16
patches) for several codebook sizes, and measures held-out reconstruction PSNR and
encode throughput. The peer is scikit-learn's ``MiniBatchKMeans`` fit on the very same
PCA patch vectors (same sample, same k), decoded the same way, so the table compares the
k-means engines alone. Then a small VQ-VAE is trained for a fixed number of steps and its
held-out PSNR reported.

    python bench/vq.py            # k = 1024, 4096, 8192 (a few minutes on 2 cores)
    python bench/vq.py --quick    # k = 256, 1024; smaller sample; tiny VQ-VAE run

The peer runs up to ``--peer-max-k`` (4096 by default: its k-means++ initialisation
dominates at k = 8192). Batched encode (``encode_batch``) is the number in the table;
``*_single`` in the JSON is one call per image.

Results: a table on stdout and ``bench/results/vq.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmshard.tokenizers.codebook import Codebook, CodebookConfig  # noqa: E402
from mmshard.tokenizers.patch_vq import (  # noqa: E402
    PatchVQConfig,
    PatchVQTokenizer,
    extract_patches,
)
from mmshard.tokenizers.vqvae import VQVAEConfig, VQVAETokenizer, train_vqvae  # noqa: E402


def photo_like(rng: np.random.Generator, n: int = 256) -> np.ndarray:
    """Smooth random colour field + a few filled shapes + mild Gaussian noise (uint8)."""
    from PIL import Image, ImageDraw

    low = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(low).resize((n, n), Image.Resampling.BICUBIC))
    img = Image.fromarray(field)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = rng.integers(0, n - 16, 2)
        w, h = rng.integers(12, n // 2, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [int(x0), int(y0), int(min(n - 1, x0 + w)), int(min(n - 1, y0 + h))]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, 4, (n, n, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 100.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)


def sklearn_peer(tok: PatchVQTokenizer, fit_images: list[np.ndarray],
                 test_images: list[np.ndarray], k: int, seed: int) -> dict[str, float]:
    """MiniBatchKMeans on the same PCA vectors; decoded through the same PCA/normalisation."""
    from sklearn.cluster import MiniBatchKMeans

    cfg = tok.config
    rng = np.random.default_rng(cfg.seed)
    chunks = []
    for img in fit_images:  # the same sampling rule as PatchVQTokenizer.fit
        p, _ = extract_patches(img, cfg.patch)
        if len(p) > cfg.patches_per_image:
            p = p[np.sort(rng.choice(len(p), cfg.patches_per_image, replace=False))]
        chunks.append(p)
    x = tok._to_vectors(np.concatenate(chunks))
    t0 = time.perf_counter()
    km = MiniBatchKMeans(n_clusters=k, batch_size=4096, n_init=1, max_iter=20,
                         random_state=seed).fit(x)
    fit_s = time.perf_counter() - t0
    peer = PatchVQTokenizer(cfg, Codebook(km.cluster_centers_.astype(np.float32),
                                          CodebookConfig(k=k)),
                            pca_mean=tok.pca_mean, pca_components=tok.pca_components)
    t0 = time.perf_counter()
    grids = peer.encode_batch(test_images)
    enc_s = time.perf_counter() - t0
    values = [psnr(peer.decode(g), im) for g, im in zip(grids, test_images)]
    return {"fit_s": fit_s, "psnr_db": float(np.mean(values)),
            "encode_img_per_s": len(test_images) / enc_s,
            "used_codes": peer.usage(grids)["used"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (k = 256, 1024)")
    ap.add_argument("--ks", type=int, nargs="*", help="codebook sizes (default 1024 4096 8192)")
    ap.add_argument("--fit-images", type=int, default=None, help="images in the fit sample")
    ap.add_argument("--test-images", type=int, default=None, help="held-out images")
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--pca-dim", type=int, default=64)
    ap.add_argument("--vqvae-steps", type=int, default=None)
    ap.add_argument("--no-peer", action="store_true", help="skip scikit-learn")
    ap.add_argument("--peer-max-k", type=int, default=4096,
                    help="largest k for the scikit-learn peer (its k-means++ init is slow)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "vq.json"))
    args = ap.parse_args()
    ks = args.ks or ([256, 1024] if args.quick else [1024, 4096, 8192])
    n_fit = args.fit_images or (48 if args.quick else 160)
    n_test = args.test_images or (16 if args.quick else 32)
    vq_steps = args.vqvae_steps if args.vqvae_steps is not None else (60 if args.quick else 300)

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    fit_images = [photo_like(rng) for _ in range(n_fit)]
    test_images = [photo_like(rng) for _ in range(n_test)]
    gen_s = time.perf_counter() - t0
    # warm-up (faiss / OpenMP / BLAS start-up) so the first timed fit is not penalised
    PatchVQTokenizer.fit(fit_images[:2], config=PatchVQConfig(patch=args.patch, k=16,
                                                               pca_dim=8, niter=2))
    rows = []
    for k in ks:
        per_image = max(64, min(256, math.ceil(8 * k / n_fit)))
        cfg = PatchVQConfig(patch=args.patch, k=k, pca_dim=args.pca_dim, seed=args.seed,
                            niter=20, patches_per_image=per_image)
        t0 = time.perf_counter()
        tok = PatchVQTokenizer.fit(fit_images, config=cfg)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        grids = tok.encode_batch(test_images)
        enc_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        one_by_one = [tok(im) for im in test_images]
        enc1_s = time.perf_counter() - t0
        assert all(np.array_equal(a, b) for a, b in zip(grids, one_by_one))
        row = {
            "k": k, "patch": args.patch, "pca_dim": args.pca_dim,
            "fit_patches": tok.codebook.provenance["fit_shape"][0],
            "mmshard_fit_s": fit_s,
            "mmshard_psnr_db": float(np.mean([psnr(tok.decode(g), im)
                                              for g, im in zip(grids, test_images)])),
            "mmshard_encode_img_per_s_batched": n_test / enc_s,
            "mmshard_encode_img_per_s_single": n_test / enc1_s,
            "mmshard_used_codes": tok.usage(grids)["used"],
        }
        if not args.no_peer and k <= args.peer_max_k:
            peer = sklearn_peer(tok, fit_images, test_images, k, args.seed)
            row.update({f"sklearn_{name}": v for name, v in peer.items()})
        rows.append(row)
        shown = {a: round(b, 3) if isinstance(b, float) else b for a, b in row.items()}
        print(f"k={k} done: {json.dumps(shown)}", flush=True)

    # VQ-VAE: fixed steps on 64x64 downsized images (32x32 in --quick)
    from PIL import Image

    side = 32 if args.quick else 64

    def small(im: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.BICUBIC))

    vcfg = VQVAEConfig(codebook_size=512, code_dim=32, channels=(32, 64), batch_size=16,
                       restart_after=20)
    t0 = time.perf_counter()
    model, hist = train_vqvae([small(i) for i in fit_images], vcfg, steps=vq_steps,
                              seed=args.seed, device="cpu")
    train_s = time.perf_counter() - t0
    vtok = VQVAETokenizer(model)
    test_small = [small(i) for i in test_images]
    t0 = time.perf_counter()
    ids = vtok.encode(test_small)
    venc_s = time.perf_counter() - t0
    rec = vtok.decode(ids)
    counts = np.bincount(ids.ravel().astype(np.int64), minlength=vcfg.codebook_size)
    # the patch VQ at the same size and token count for reference (patch 4 -> 16x16 grid)
    ref = PatchVQTokenizer.fit([small(i) for i in fit_images],
                               config=PatchVQConfig(patch=vcfg.factor, k=512, seed=args.seed,
                                                    patches_per_image=64))
    vqvae = {
        "image_side": side, "steps": len(hist), "codebook_size": vcfg.codebook_size,
        "downsample": vcfg.factor, "train_s": train_s,
        "psnr_db": float(np.mean([psnr(r, t) for r, t in zip(rec, test_small)])),
        "encode_img_per_s": n_test / venc_s,
        "used_codes": int((counts > 0).sum()),
        "first_recon_loss": hist[0]["recon"], "last_recon_loss": hist[-1]["recon"],
        "patch_vq_same_grid_psnr_db": ref.reconstruction_psnr(test_small),
    }

    print()
    hdr = (f"{'k':>6} {'fit px':>7} {'fit s':>7} {'PSNR dB':>8} {'enc img/s':>10} "
           f"{'used':>5} | {'sk fit s':>8} {'sk PSNR':>8} {'sk used':>7}")
    print(f"patch VQ: {args.patch}x{args.patch} patches, PCA {args.pca_dim}, "
          f"{n_fit} fit / {n_test} held-out images 256x256, faiss k-means vs "
          "sklearn MiniBatchKMeans")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        peer = (f"{r['sklearn_fit_s']:8.1f} {r['sklearn_psnr_db']:8.2f} "
                f"{r['sklearn_used_codes']:7d}" if "sklearn_fit_s" in r else "   (skipped)")
        print(f"{r['k']:6d} {r['fit_patches']:7d} {r['mmshard_fit_s']:7.1f} "
              f"{r['mmshard_psnr_db']:8.2f} {r['mmshard_encode_img_per_s_batched']:10.1f} "
              f"{r['mmshard_used_codes']:5d} | {peer}")
    print(f"\nVQ-VAE ({side}x{side}, factor {vcfg.factor}, k={vcfg.codebook_size}, "
          f"{vqvae['steps']} steps, CPU): PSNR {vqvae['psnr_db']:.2f} dB, "
          f"train {train_s:.1f} s, encode {vqvae['encode_img_per_s']:.0f} img/s, "
          f"{vqvae['used_codes']} codes used; patch VQ with the same grid: "
          f"{vqvae['patch_vq_same_grid_psnr_db']:.2f} dB")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import faiss
    import torch

    result = {
        "bench": "vq", "quick": args.quick, "seed": args.seed, "image_gen_s": gen_s,
        "fit_images": n_fit, "test_images": n_test, "patch_vq": rows, "vqvae": vqvae,
        "env": {"python": platform.python_version(), "faiss": faiss.__version__,
                "torch": torch.__version__, "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "cuda": torch.cuda.is_available(), "faiss_gpus": faiss.get_num_gpus()},
    }
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
