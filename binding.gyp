# Builds the FUSE addon (build/Release/starlight_fuse.node), the socket-option addon
# (build/Release/starlight_net.node), the blob-file addon (build/Release/starlight_blob.node), the gzip
# addon (build/Release/starlight_inflate.node) and the fd holder during `npm install` / `npm ci`.
# node-addon-api with C++ exceptions on (NAPI_CPP_EXCEPTIONS): exceptions are thrown only on the JS
# thread for argument errors; every libfuse callback catches everything (see native/ops.cc).
{
  "targets": [
    {
      "target_name": "starlight_fuse",
      "sources": [
        "native/addon.cc",
        "native/inode_table.cc",
        "native/session.cc",
        "native/ops.cc",
        "native/passthrough.cc",
        "native/fd_passing.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(pkg-config --cflags-only-I fuse3 | sed 's/-I//g')"
      ],
      "libraries": ["<!@(pkg-config --libs fuse3)"],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "_FILE_OFFSET_BITS=64"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
    },
    {
      # Socket options Node does not expose (native/net.cc): no libfuse, so a proxy host needs none.
      "target_name": "starlight_net",
      "sources": ["native/net.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      # One call per small CAS content (native/blob.cc; no libfuse): the item-pool threads' file
      # creation without four fs calls and a BigIntStats per content (issue 18); and syncfs(2) on
      # the libuv pool for the daemon, which Node does not bind (issue 19).
      "target_name": "starlight_blob",
      "sources": ["native/blob.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_FILE_OFFSET_BITS=64"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      # Layer gzip inflate + diffID sha256 on the libuv pool (native/inflate.cc; ISA-L, no libfuse):
      # the proxy's first-contact index pass (issue 10). sha256 is OpenSSL's, which node exports.
      "target_name": "starlight_inflate",
      "sources": ["native/inflate.cc", "native/tar_walk.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "libraries": ["-lisal"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      # The fd holder (native/holder.cc): a plain executable, no Node, no libfuse.
      "target_name": "starlight-fuse-holder",
      "type": "executable",
      "sources": ["native/holder.cc", "native/fd_passing.cc"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
    }
  ]
}
