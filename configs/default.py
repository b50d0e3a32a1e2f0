r"""Default configuration: NL3D on MARS with the adopted paper recipe.

Every other config starts from this one and overrides a few keys. Run:

  python -m vreid_jax.main --config configs/default.py --workdir runs/nl3d_mars \
      --config.data.data_dir=/path/to/tfds_data

Durations carry their unit in the name (`_steps`, `_epochs`). The file is declarative: it imports
nothing heavy and does no work.
"""

import ml_collections


def get_config(arg=None):
    """Returns the default config. `arg` is unused here (see configs/demo.py for one that uses it)."""
    del arg
    config = ml_collections.ConfigDict()

    # What to run: 'train_and_eval' (train, evaluating periodically and at the end), 'train' (no
    # evaluation), 'eval' (evaluate a checkpoint without training), or 'preflight' (compile the
    # full-size train step and evaluation functions on the devices present, time a few steps on
    # random data and the input pipeline on synthetic frames; report per-device memory against
    # capacity, FLOPs, predicted step time and MFU and a verdict with the changes to make, in
    # workdir/preflight.json; reads no dataset, trains nothing; see config.preflight).
    config.mode = "train_and_eval"
    # Seeds every random stream: parameter init, dropout, data order, augmentation, synthetic data.
    config.seed = 0

    # ---------------------------------------------------------------- data
    config.data = ml_collections.ConfigDict()
    # Dataset name: 'mars', 'dukev', 'ilidsvid', 'prid2011' or 'lsvid'.
    config.data.name = "mars"
    # TFDS data_dir holding the shards written by `python -m data_prep.build --data_dir ...`.
    config.data.data_dir = ""
    # For iLIDS-VID and PRID-2011: which of the 10 published train/test splits (0-9).
    config.data.split = 0
    # A synthetic stand-in. The keys besides `enabled` are `data_prep.synthetic.generate`'s keyword
    # arguments, passed through as they are.
    config.data.synthetic = ml_collections.ConfigDict()
    # If True and `data_dir` holds no built dataset, generate a synthetic dataset in the real layout
    # of `name` and build it there (the demo uses this; real data is never generated).
    config.data.synthetic.enabled = False
    # Size of the synthetic dataset: identities per split and tracklets per identity, their lengths.
    config.data.synthetic.num_ids = 64
    config.data.synthetic.tracklets_per_id = 4
    config.data.synthetic.min_len = 8
    config.data.synthetic.max_len = 48
    # Frame size the synthetic frames are rendered at (height, width); real MARS frames are 256x128.
    config.data.synthetic.height = 128
    config.data.synthetic.width = 64
    # Scale of every synthetic nuisance (camera colour cast, background, blur, noise, box jitter,
    # occlusions): 0 = clean centred people; higher = harder for an untrained network.
    config.data.synthetic.difficulty = 1.0

    # ---------------------------------------------------------------- input pipeline
    config.input = ml_collections.ConfigDict()
    # Frame size fed to the network (height, width), after resizing.
    config.input.height = 256
    config.input.width = 128
    # How frames of another size are resized to it (antialiased): 'bicubic' or 'bilinear'.
    config.input.resize = "bicubic"
    # P identities x K clips per global batch (global batch = P * K clips).
    config.input.num_ids_per_batch = 32
    config.input.num_instances = 4
    # 'identity': every training identity once per epoch with K tracklets (replacement where it has
    # fewer); 'tracklet': torchreid/AP3D's RandomIdentitySampler, every tracklet about once per epoch
    # (with K = 1: batches of P random tracklets of distinct identities, no identity sampling).
    config.input.epoch = "identity"
    # Frames per training clip (T).
    config.input.clip_len = 8
    # Temporal sampler for training clips: 'restricted_window' (one random frame from each of T equal
    # chunks of a random `window`-frame span, loop-padded; the NL3D recipe), 'restricted' (one random
    # frame per equal chunk of the whole tracklet), 'consecutive' (T consecutive frames from a random
    # start, loop-padded; the GLTR recipe) or 'evenly' (T evenly spaced frames).
    config.input.train_sampler = "restricted_window"
    config.input.window = 64
    # Clip-consistent augmentation (one random draw per clip, never per frame).
    config.input.flip = True
    config.input.pad = 10  # Zero-pad by this many pixels, then random-crop back (0 disables).
    config.input.random_erasing = 0.0  # Probability of random erasing per clip (0 disables).
    # tf.data parallelism: -1 = AUTOTUNE. Batches prefetched ahead of the accelerator.
    config.input.num_parallel_calls = -1
    config.input.prefetch = 2
    # Threads of the input pipeline's private pool (0 = TensorFlow's shared pool, one per core);
    # a small value leaves cores to the training process, 1 measures one core's throughput.
    config.input.threadpool_size = 0

    # ---------------------------------------------------------------- model
    config.model = ml_collections.ConfigDict()
    # 'nl3d' (3D (2+1)D ResNet-50 + non-local) or 'gltr'.
    config.model.name = "nl3d"
    # ResNet depth as torchvision names it: 18 or 34 (basic blocks), 50 (the papers), 101 or 152
    # (bottlenecks). The depth also picks the block type when `stage_sizes` is set.
    config.model.depth = 50
    # Blocks per stage; empty = the standard layout of `depth` (ResNet-50: 3, 4, 6, 3); the tests'
    # and the demo's small networks set (1, 1, 1, 1).
    config.model.stage_sizes = ()
    # Channels of the first stage (64 for ResNet-50); smaller for quick CPU runs.
    config.model.width = 64
    # Stride of the last stage: 1 keeps a 16x8 map at 256x128 (AP3D, GLTR), 2 is torchvision's.
    config.model.last_stride = 1
    # ImageNet weights: a `.npz` from `python -m vreid_jax.models.convert_resnet50` (any torchvision
    # ResNet matching depth, stage_sizes and width), overlaid on the random init; '' = random init only.
    # Only training reads it: mode=eval restores everything from the checkpoint.
    config.model.pretrained = ""
    # Compute dtype: 'float32' or 'bfloat16' (parameters, BN statistics and losses stay float32).
    config.model.dtype = "float32"
    # How convs and max-pools are computed; values and parameters are the same either way.
    # 'auto': the CPU rewrites (1x1 and temporal t x 1 x 1 convs as matrix products, the other
    # convs' weight gradients as im2col matrix products, the max-pool with its own gradient)
    # where JAX's default backend is the CPU, XLA's own conv and reduce-window on GPU and TPU;
    # 'true' / 'false' force them on / off on any platform.
    config.model.fast_cpu_ops = "auto"
    # Which input of a max-pool window with tied maxima (zeros after a ReLU) gets the gradient:
    # 'first' (PyTorch's rule, the default on every platform: both the CPU rewrite and XLA's own
    # pool gradient do it) or 'split' (shared equally, JAX's rule for the maximum of a reduction).
    config.model.max_pool_ties = "first"
    # Size of the retrieval feature bottleneck (NL3D head).
    config.model.bottleneck_dim = 512
    config.model.dropout = 0.5
    # NL3D: temporal kernel size of the (2+1)D factorised convs.
    config.model.temporal_kernel = 3
    # NL3D: which blocks of each stage (0-based) get a temporal conv after their strided 3x3 conv;
    # () means every block of that stage. One tuple per stage res2..res5.
    config.model.temporal_blocks = ((), (), (), ())
    # NL3D: stages that get temporal convs at all (0 = res2 ... 3 = res5); others stay 2D per frame.
    config.model.temporal_stages = (0, 1, 2, 3)
    # NL3D: temporal padding: 'zeros' (as I3D) or 'edge' (replicate border frames).
    config.model.temporal_padding = "zeros"
    # NL3D: temporal tap init: 'inflate' (identity/t on every tap = I3D inflation) or 'center'.
    config.model.temporal_init = "inflate"
    # NL3D: non-local blocks after these 0-based block indices, one tuple per stage res2..res5.
    config.model.nonlocal_blocks = ((), (1, 3), (1, 3, 5), ())
    # NL3D: scale the non-local affinity by 1/sqrt(d) (Wang et al.); off as in AP3D and GLTR.
    config.model.nonlocal_scale = False
    # GLTR: per-frame feature size after the 2048 -> d reduction.
    config.model.gltr_frame_dim = 128
    # GLTR: DTP dilations; the identity branch is always concatenated (official code: 1, 2, 3).
    config.model.gltr_dilations = (1, 2, 3)
    # TF-CLIP (`configs/tfclip_mars.py`): the CLIP ViT image encoder (ViT-B/16: width 768, 12
    # layers, 12 heads, 16-pixel patches, 512-d projection; `config.model.pretrained` is then a
    # `.npz` from `python -m vreid_jax.models.convert_clip` for the configured frame size), the
    # camera embedding (one vector per camera, `sie_coe` times it added to the class token), SSP's
    # dropout and the evaluation descriptor ('before' the BNNecks, 2048-d for ViT-B/16, or 'after').
    config.model.tfclip = ml_collections.ConfigDict()
    config.model.tfclip.width = 768
    config.model.tfclip.layers = 12
    config.model.tfclip.heads = 12
    config.model.tfclip.patch_size = 16
    config.model.tfclip.output_dim = 512
    config.model.tfclip.num_cameras = 6  # Cameras of the training set (MARS: 6).
    config.model.tfclip.sie_coe = 1.0
    config.model.tfclip.ssp_dropout = 0.1
    config.model.tfclip.neck_feat = "before"

    # ---------------------------------------------------------------- loss
    config.loss = ml_collections.ConfigDict()
    config.loss.label_smoothing = 0.1  # Epsilon of the label-smoothed softmax cross-entropy.
    config.loss.triplet_margin = 0.3  # Margin of the batch-hard triplet loss.
    config.loss.triplet_distance = "euclidean"  # 'euclidean' or 'cosine'.
    config.loss.ce_weight = 1.0  # Weight of the cross-entropy in the total loss.
    config.loss.triplet_weight = 1.0  # Weight of the triplet loss in the total loss.

    # ---------------------------------------------------------------- optimiser and schedule
    config.optim = ml_collections.ConfigDict()
    # 'adam': PyTorch Adam(weight_decay=...) semantics, coupled L2 added to the gradient before the
    # moments; 'adamw': decoupled decay; 'sgd': PyTorch SGD(momentum, weight_decay) semantics.
    config.optim.name = "adam"
    config.optim.learning_rate = 3e-4  # Peak learning rate (reached after the warmup).
    config.optim.weight_decay = 5e-4  # On every parameter, BN and biases included (torchreid).
    config.optim.b1 = 0.9  # Adam's beta1, beta2 and epsilon (torch.optim.Adam defaults).
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8
    config.optim.momentum = 0.9  # 'sgd' only: torch.optim.SGD's momentum (dampening 0).
    config.schedule = ml_collections.ConfigDict()
    # Every schedule starts with a linear warmup from 0 to `optim.learning_rate` (none when 0), then:
    # 'exponential': lr * decay_rate ** (epochs since the warmup / decay_epochs);
    # 'multistep': lr * decay_rate ** (number of `milestones_epochs` passed, counted from step 0);
    # 'constant': lr.
    config.schedule.name = "exponential"
    config.schedule.warmup_epochs = 0.0
    config.schedule.decay_rate = 0.1
    config.schedule.decay_epochs = 200.0
    # Exponential decay at every step (False) or once per whole epoch (True).
    config.schedule.staircase = False
    config.schedule.milestones_epochs = (60, 120, 180)
    # Training length in epochs; `num_train_steps` > 0 overrides it.
    config.num_epochs = 240
    config.num_train_steps = -1

    # ---------------------------------------------------------------- evaluation
    config.eval = ml_collections.ConfigDict()
    # Clip-averaging models (NL3D): clips per evaluation batch across all devices.
    config.eval.batch_size = 32
    # Frame-sequence models (GLTR): frames per encoder batch across all devices; the temporal head
    # sees whole tracklets padded up to one of these lengths.
    config.eval.frame_batch_size = 256
    config.eval.length_buckets = (64, 128, 256, 512, 1024)
    # NL3D: how clip features are combined per tracklet: 'mean' or 'max'.
    config.eval.aggregate = "mean"
    # Distance: 'euclidean' or 'cosine'; L2-normalise features first (the MARS MATLAB code does).
    config.eval.distance = "euclidean"
    config.eval.normalize_features = True
    # Gallery of MARS and LS-VID, whose stored gallery excludes the queries: 'official' (the
    # queries and the stored gallery; MARS: 11,310 tracklets) or 'torchreid' (the stored gallery
    # alone; MARS: 9,330). The other datasets have one gallery.
    config.eval.gallery = "official"
    # AP formula: 'standard' (mean precision at hits, torchreid) or 'trapezoid' (MARS MATLAB).
    config.eval.ap_mode = "standard"
    config.eval.max_rank = 50
    # k-reciprocal re-ranking (Zhong et al. 2017), reported separately from the plain numbers.
    config.eval.rerank = False
    # Also evaluate the network before training (step 0), reported as "untrained" (the demo does).
    config.eval.before_training = False
    # Ranked-list pictures for this many queries (0 disables), top-k each.
    config.eval.num_ranked_queries = 8
    config.eval.ranked_top_k = 10
    # For 10-split datasets: the splits that `mode=train_and_eval` trains and evaluates in turn
    # (() = only `data.split`; (0, 1, ..., 9) = the full protocol).
    config.eval.splits = ()
    # mode=eval: which checkpoint: 'latest', 'best' or a path to a checkpoint step folder.
    config.eval.checkpoint = "latest"

    # ---------------------------------------------------------------- preflight (mode=preflight)
    config.preflight = ml_collections.ConfigDict()
    # Train steps timed on random data after one warm-up step (the median is the prediction).
    config.preflight.timed_steps = 3
    # Seconds the input pipeline is timed for, on synthetic frames at the configured size.
    config.preflight.input_seconds = 5.0

    # ---------------------------------------------------------------- devices and hosts
    config.mesh = ml_collections.ConfigDict()
    # Multi-host: leave empty for automatic detection (TPU pods, SLURM) or a single process;
    # otherwise 'host:port' of process 0, with the process count and this process's id.
    config.mesh.coordinator_address = ""
    config.mesh.num_processes = 1
    config.mesh.process_id = 0
    # Keep freed host memory in the process ('auto' | 'true' | 'false'; vreid_jax/host_memory.py):
    # XLA:CPU's convolution scratch then reuses pages instead of faulting them in on every call.
    # 'auto' = where JAX runs on the CPU. Read by the CLI before JAX starts (not from a notebook).
    config.keep_host_memory = "auto"

    # ---------------------------------------------------------------- logging and checkpoints
    config.log_every_steps = 50
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2  # The latest N are kept, plus the best by mAP.
    # Trace this many train steps from `profile_first_step` (0 = off) into workdir/tensorboard: the
    # TensorBoard Profile tab shows them (with the tensorboard-plugin-profile package).
    config.profile_steps = 0
    config.profile_first_step = 10

    return config
