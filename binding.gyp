{
  # kforce native kernels. OpenBLAS is found through pkg-config; without it (or with kf_blas=0) the portable C
  # GEMM path is built. -march=native is deliberate: the addon is compiled on the machine that runs it.
  "variables": {
    "kf_blas%": "<!(pkg-config --exists openblas && echo 1 || echo 0)"
  },
  "targets": [
    {
      "target_name": "kforce",
      "sources": [
        "native/addon.c",
        "native/pool.c",
        "native/mathx.c",
        "native/linear.c",
        "native/gemm.c",
        "native/norm.c",
        "native/rope.c",
        "native/attention.c",
        "native/loss.c",
        "native/sample.c",
        "native/rows.c",
        "native/screen.c"
      ],
      "cflags": ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wextra",
                 "-Wno-unused-parameter"],
      "cflags_c": ["-std=gnu11"],
      "libraries": ["-lm", "-lpthread"],
      "conditions": [
        ["kf_blas==1", {
          "cflags": ["<!@(pkg-config --cflags openblas)"],
          "libraries": ["<!@(pkg-config --libs openblas)"]
        }, {
          "defines": ["KF_NO_BLAS"]
        }]
      ]
    }
  ]
}
