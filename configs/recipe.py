"""The paper recipes, one function shared by the `configs/<model>_<dataset>.py` files.

Each value follows the paper or its official code; where the papers are silent the values are the
adopted defaults of the closest reference code (AP3D for NL3D, the official GLTR code for GLTR), and
say so. TF-CLIP's come from its official code, whose one config file serves every dataset.
"""

from configs import default
from data_prep import names
from vreid_jax import config_lib
from vreid_jax.errors import UserError


def make(model: str, dataset: str, arg: str | None):
    """The recipe config for `model` on `dataset`; `arg` may set `split=N`, `all_splits` and
    `official` (the authors' own training, see `_official_training`)."""
    args = config_lib.parse_arg(arg, split=0, all_splits=False, official=False)
    config = default.get_config()
    config.model.name = model
    config.data.name = dataset
    config.data.split = args.split
    if dataset in names.MULTI_SPLIT and args.all_splits:
        config.eval.splits = tuple(range(names.NUM_SPLITS))

    # Common to both: Adam 3e-4 with coupled L2 5e-4 (PyTorch Adam(weight_decay=...)), exponential
    # decay to 1/10 every 80 epochs, 240 tracklet epochs (AP3D's length), ImageNet ResNet-50 init.
    config.optim.name = "adam"
    config.optim.learning_rate = 3e-4
    config.optim.weight_decay = 5e-4
    config.schedule.name = "exponential"
    config.schedule.decay_rate = 0.1
    config.schedule.decay_epochs = 80.0
    config.input.epoch = "tracklet"
    config.num_epochs = 240
    config.model.pretrained = "resnet50.npz"  # From `python -m vreid_jax.models.convert_resnet50`.

    if model == "nl3d":
        # 32 ids x 4 clips of 8 frames: one random frame per 8-frame chunk of a random 64-frame
        # window (Wang et al.'s 8x8 sampling); label-smoothed CE + batch-hard triplet 0.3.
        config.input.num_ids_per_batch = 32
        config.input.num_instances = 4
        config.input.clip_len = 8
        config.input.train_sampler = "restricted_window"
        config.input.window = 64
        config.eval.batch_size = 32
    elif model == "gltr":
        # The official code trains on 16 consecutive frames with plain CE; we keep its sampling and
        # add the batch-hard triplet (--config.loss.triplet_weight=0 and label_smoothing=0 give
        # plain CE).
        config.input.num_ids_per_batch = 8
        config.input.num_instances = 4
        config.input.clip_len = 16
        config.input.train_sampler = "consecutive"
        config.eval.frame_batch_size = 256
    elif model == "tfclip":
        _tfclip(config, dataset)
    else:
        raise ValueError(f"Unknown model {model!r}; expected 'nl3d', 'gltr' or 'tfclip'.")

    if model == "tfclip":
        if args.official:
            raise UserError("tfclip:official: the TF-CLIP recipe is already the official one.")
        return config
    if dataset in names.MULTI_SPLIT:
        # 150 (iLIDS-VID) / 89 (PRID-2011) train ids: smaller P keeps several batches per epoch.
        config.input.num_ids_per_batch = 8
        config.eval.ap_mode = "standard"
    if dataset in ("dukev", "lsvid"):
        config.eval.batch_size = 32
    if args.official:
        _official_training(config, model)
    return config


def _official_training(config, model: str) -> None:
    """`:official`: the authors' own training, for reproducing the paper (not the mission's Adam
    recipe). Only GLTR has one: its official code (ljn114514/GLTR's `train.py`)."""
    if model != "gltr":
        raise UserError(
            f"{model}:official: the {model.upper()} paper states no training schedule and has no "
            "official code, so there is no official setting to reproduce: the recipe is the "
            "adopted setting (README, Training recipes)."
        )
    # SGD lr 0.01, momentum 0.9, weight decay 5e-4; x0.1 every 120 epochs; the model after 500.
    config.optim.name = "sgd"
    config.optim.learning_rate = 0.01
    config.optim.momentum = 0.9
    config.optim.weight_decay = 5e-4
    config.schedule.name = "multistep"
    config.schedule.warmup_epochs = 0.0
    config.schedule.decay_rate = 0.1
    config.schedule.milestones_epochs = (120, 240, 360, 480)
    config.num_epochs = 500
    # Batches of 10 random tracklets (no identity sampling) of 16 consecutive frames. Our sampler
    # keeps one identity per batch slot (its multi-host lanes), so the 10 are distinct identities.
    config.input.epoch = "tracklet"
    config.input.num_ids_per_batch = 10
    config.input.num_instances = 1
    config.input.clip_len = 16
    config.input.train_sampler = "consecutive"
    # No augmentation (ToTensor + Normalize only); bilinear resizing.
    config.input.flip = False
    config.input.pad = 0
    config.input.random_erasing = 0.0
    config.input.resize = "bilinear"
    # Plain cross-entropy.
    config.loss.label_smoothing = 0.0
    config.loss.triplet_weight = 0.0
    # Evaluated with the MARS MATLAB code: L2-normalised, Euclidean, queries in the gallery,
    # trapezoid AP.
    config.eval.normalize_features = True
    config.eval.distance = "euclidean"
    config.eval.gallery = "official"
    config.eval.ap_mode = "trapezoid"


# TF-CLIP: one camera embedding per camera of the dataset (the official code counts its training
# set's cameras, `num_train_cams`; evaluation needs one for every test camera too).
TFCLIP_CAMERAS = {"mars": 6, "dukev": 8, "ilidsvid": 2, "prid2011": 2, "lsvid": 15}
# TF-CLIP: evaluation about every 2 epochs (EVAL_PERIOD 2) of steps of 4 ids x 4 tracklets, where an
# epoch is one group of 4 tracklets per identity, more for identities with 8 or more: MARS about
# 2,000 groups; LS-VID and DukeMTMC-VideoReID at least 842 and 702 (their per-identity counts are
# not verified here: about 3 tracklets each); iLIDS-VID 150 and PRID-2011 89 (one group each).
TFCLIP_EVAL_EVERY_STEPS = {"mars": 1000, "lsvid": 450, "dukev": 375, "ilidsvid": 74, "prid2011": 44}


def _tfclip(config, dataset: str) -> None:
    """TF-CLIP's official recipe (`AsuradaYuci/TF-CLIP`, `configs/vit_clipreid.yml` and
    `config/defaults.py`; stage 2, the only stage its training runs).

    The official code has one config file for every dataset (its README: change `DATASETS.NAMES`
    at the bottom), so the hyper-parameters are MARS's everywhere; what differs per dataset is the
    number of cameras, LS-VID's training sampler (below) and how often to evaluate. The iLIDS-VID
    and PRID-2011 splits come from `make` (`:split=N`, `:all_splits`)."""
    # OpenAI's ViT-B/16 (MODEL.NAME 'ViT-B-16', STRIDE_SIZE 16), converted for 256x128 frames
    # (INPUT.SIZE_TRAIN / SIZE_TEST) by `python -m vreid_jax.models.convert_clip`.
    config.model.pretrained = "ViT-B-16.npz"
    config.model.tfclip.update(
        width=768, layers=12, heads=12, patch_size=16, output_dim=512,
        num_cameras=TFCLIP_CAMERAS[dataset],
    )  # fmt: skip
    config.model.tfclip.sie_coe = 1.0  # SIE_CAMERA True, SIE_COE 1.0.
    config.model.tfclip.neck_feat = "before"  # TEST.NECK_FEAT: the 2048-d descriptor.
    config.input.height, config.input.width = 256, 128
    # IMS_PER_BATCH 16 = 4 identities x NUM_INSTANCE 4 tracklets of SEQ_LEN 8 frames, drawn by
    # restricted random sampling ('rrs_train': one random frame in each of 8 equal chunks).
    config.input.num_ids_per_batch = 4
    config.input.num_instances = 4
    config.input.clip_len = 8
    config.input.train_sampler = "restricted"
    if dataset == "lsvid":
        # The official LS-VID loader trains on 48-frame pieces of each tracklet (`sampling_step`
        # 48; the last piece takes the remainder, tracklets under 48 frames are left out), each
        # sampled as above: one random frame in each 6-frame chunk of a 48-frame span.
        config.input.train_sampler = "restricted_window"
        config.input.window = 48
    # RandomIdentitySampler: an epoch is every identity's groups of K tracklets (torchreid's).
    config.input.epoch = "tracklet"
    # RectScale, horizontal flip 0.5, random erasing 0.5 (the official code erases per frame,
    # here per clip), no padding; ImageNet normalisation (the official transforms').
    config.input.flip = True
    config.input.pad = 0
    config.input.random_erasing = 0.5
    config.input.resize = "bilinear"
    # Loss: ID_LOSS_WEIGHT 0.25 (on each of three heads), TRIPLET_LOSS_WEIGHT 1.0 (margin 0.3,
    # Euclidean, on three features), label smoothing 0.1; the video-to-memory (1.0) and frame (1/T)
    # terms are fixed (`training/kinds.TFClipTraining`).
    config.loss.ce_weight = 0.25
    config.loss.triplet_weight = 1.0
    config.loss.triplet_margin = 0.3
    config.loss.triplet_distance = "euclidean"
    config.loss.label_smoothing = 0.1
    # Adam (coupled L2) BASE_LR 5e-6, WEIGHT_DECAY = WEIGHT_DECAY_BIAS 1e-4, bias lr x2,
    # classifier_proj_temp lr x10 (`training/tfclip_optim.py`); WarmupMultiStepLR: linear warm-up
    # from 0.1x over 10 epochs, x0.1 at epochs 30, 50, 70; 80 epochs (MAX_EPOCHS).
    config.optim.name = "adam"
    config.optim.learning_rate = 5e-6
    config.optim.weight_decay = 1e-4
    config.schedule.name = "multistep"
    config.schedule.warmup_epochs = 10.0
    config.schedule.milestones_epochs = (30, 50, 70)
    config.schedule.decay_rate = 0.1
    config.num_epochs = 80
    # Every frame in chunks of 8 (the official 'dense' test), descriptors averaged per tracklet;
    # FEAT_NORM 'yes', Euclidean. The official evaluation (`utils/metrics.py`, R1_mAP_eval) ranks
    # each query against every test feature, queries included (`gf = feats[0:]`): on MARS and
    # LS-VID that is `gallery='official'` (MARS: 11,310 tracklets), although its dataset classes
    # store the gallery without the queries. Same-identity same-camera items are ignored, junk
    # (-1) tracklets are never loaded, distractors (0) stay negatives; standard AP.
    config.eval.batch_size = 32
    config.eval.aggregate = "mean"
    config.eval.normalize_features = True
    config.eval.distance = "euclidean"
    config.eval.gallery = "official"
    config.eval.ap_mode = "standard"
    config.eval_every_steps = TFCLIP_EVAL_EVERY_STEPS[dataset]
