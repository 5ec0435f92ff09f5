// cliplit-enhance: enhance a backlit photo or video with a cliplit ONNX model through OpenCV's DNN module.
//
//   cliplit-enhance MODEL.onnx IN.png OUT.png         one image (any format cv::imread / cv::imwrite know)
//   cliplit-enhance MODEL.onnx IN.mp4 OUT.avi         a video, frame by frame (MJPG in AVI: no encoder plugin needed)
//   cliplit-enhance MODEL.onnx 0 OUT.avi [FRAMES]     camera 0, FRAMES frames (default 100)
//
// It follows README.md's "ONNX I/O contract" for the float variant: input `image`, N x 3 x H x W RGB in [0, 1];
// outputs `enhanced` (same layout) and `light_map` (N x 1 x H x W). OpenCV 4.x needs a model with a fixed input size
// (`export-engine --opencv-static HxW`, docs/opencv.md); OpenCV 5 also runs the default dynamic export. Frames of
// the model's size use its `enhanced` output as it is. Frames of another size run the network on a resized copy
// and divide the full frame by the light map upsampled to it, the way `cliplit enhance --scale` does: a 720p model
// then serves any frame.
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

constexpr float kLightMapEps = 1e-6f;  // the contract's guarded division: x / max(L, 1e-6)

// floor(y * 255 + 0.5) clipped to [0, 255]: the contract's 8-bit rounding (cv::Mat::convertTo rounds half to even,
// which differs only at exact .5 boundaries, but the official outputs were rounded this way).
cv::Mat toUint8(const cv::Mat& unit) {
    cv::Mat levels;
    unit.convertTo(levels, CV_32F, 255.0, 0.5);
    cv::Mat out(levels.size(), CV_MAKETYPE(CV_8U, levels.channels()));
    const float* src = levels.ptr<float>();  // convertTo's output is continuous
    uchar* dst = out.ptr<uchar>();
    for (size_t i = 0, n = levels.total() * levels.channels(); i < n; ++i) {
        dst[i] = static_cast<uchar>(std::floor(std::min(std::max(src[i], 0.0f), 255.0f)));
    }
    return out;
}

// An N x C x H x W blob's first image as an H x W Mat of C float channels.
cv::Mat firstImage(const cv::Mat& blob) {
    std::vector<cv::Mat> images;
    cv::dnn::imagesFromBlob(blob, images);
    return images.at(0);
}

class ClipLit {
public:
    explicit ClipLit(const std::string& path) : net_(cv::dnn::readNetFromONNX(path)) {
        // A static model declares its input shape, which the net keeps as its input layer's output shape; a
        // dynamic one declares none (or zeros), and then every frame runs at its own size.
        std::vector<cv::dnn::MatShape> in, out;
        try {
            net_.getLayerShapes(cv::dnn::MatShape(), 0, in, out);
        } catch (const cv::Exception&) {
            out.clear();
        }
        if (!out.empty() && out[0].size() == 4 && out[0][2] > 0 && out[0][3] > 0) {
            size_ = cv::Size(out[0][3], out[0][2]);
        }
    }

    // The model's fixed frame size, or an empty size for a dynamic model.
    cv::Size size() const { return size_; }

    // One 8-bit BGR frame (what cv::imread and cv::VideoCapture give) in, the enhanced 8-bit BGR frame out.
    cv::Mat enhance(const cv::Mat& bgr) {
        CV_Assert(bgr.type() == CV_8UC3 && bgr.rows >= 2 && bgr.cols >= 2);  // the contract's minimum: 2x2
        const bool resized = !size_.empty() && size_ != bgr.size();
        cv::Mat input = bgr;
        if (resized) {
            cv::resize(bgr, input, size_, 0, 0, cv::INTER_AREA);
        }
        // BGR uint8 -> N x 3 x H x W RGB float in [0, 1]: swapRB and a 1/255 scale, exactly what the model takes.
        net_.setInput(cv::dnn::blobFromImage(input, 1.0 / 255.0, cv::Size(), cv::Scalar(), true, false), "image");
        std::vector<cv::Mat> outs;
        net_.forward(outs, std::vector<cv::String>{"enhanced", "light_map"});
        if (!resized) {
            cv::Mat rgb = firstImage(outs[0]);
            cv::Mat out;
            cv::cvtColor(toUint8(rgb), out, cv::COLOR_RGB2BGR);
            return out;
        }
        // The light map is smooth: upsample it and divide the full-resolution frame by it.
        cv::Mat lightMap;
        cv::resize(firstImage(outs[1]), lightMap, bgr.size(), 0, 0, cv::INTER_LINEAR);
        lightMap = cv::max(lightMap, kLightMapEps);
        cv::Mat unit, light3;
        bgr.convertTo(unit, CV_32F, 1.0 / 255.0);
        cv::merge(std::vector<cv::Mat>{lightMap, lightMap, lightMap}, light3);
        cv::Mat enhanced;
        cv::divide(unit, light3, enhanced);
        return toUint8(cv::min(enhanced, 1.0));  // x >= 0 and L > 0: only the upper bound can be crossed
    }

private:
    cv::dnn::Net net_;
    cv::Size size_;
};

bool isDigits(const std::string& text) {
    return !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); });
}

bool isImagePath(const std::string& path) {
    const std::string::size_type dot = path.rfind('.');
    if (dot == std::string::npos) {
        return false;
    }
    std::string ext = path.substr(dot + 1);
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    for (const char* known : {"png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp", "ppm", "pgm"}) {
        if (ext == known) {
            return true;
        }
    }
    return false;
}

int enhanceImage(ClipLit& model, const std::string& in, const std::string& out) {
    const cv::Mat bgr = cv::imread(in, cv::IMREAD_COLOR);
    if (bgr.empty()) {
        std::cerr << "error: cannot read image " << in << "\n";
        return 2;
    }
    const auto start = std::chrono::steady_clock::now();
    const cv::Mat enhanced = model.enhance(bgr);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!cv::imwrite(out, enhanced)) {
        std::cerr << "error: cannot write " << out << "\n";
        return 2;
    }
    std::printf("%s: %dx%d in %.2f s -> %s\n", in.c_str(), bgr.cols, bgr.rows, seconds, out.c_str());
    return 0;
}

int enhanceVideo(ClipLit& model, const std::string& in, const std::string& out, long maxFrames) {
    cv::VideoCapture capture;
    if (isDigits(in)) {
        capture.open(std::stoi(in));
    } else {
        capture.open(in);
    }
    if (!capture.isOpened()) {
        std::cerr << "error: cannot open video or camera " << in << "\n";
        return 2;
    }
    double fps = capture.get(cv::CAP_PROP_FPS);
    fps = fps > 0 ? fps : 25.0;
    cv::VideoWriter writer;
    cv::Mat frame;
    long frames = 0;
    const auto start = std::chrono::steady_clock::now();
    while ((maxFrames < 0 || frames < maxFrames) && capture.read(frame)) {
        const cv::Mat enhanced = model.enhance(frame);
        if (!writer.isOpened() && !writer.open(out, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), fps, frame.size())) {
            std::cerr << "error: cannot write video " << out << "\n";
            return 2;
        }
        writer.write(enhanced);
        ++frames;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%ld frames in %.1f s (%.2f fps) -> %s\n", frames, seconds, frames / std::max(seconds, 1e-9),
                out.c_str());
    return frames > 0 ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4 || argc > 5) {
        std::cerr << "usage: " << argv[0] << " MODEL.onnx IN.png OUT.png\n"
                  << "       " << argv[0] << " MODEL.onnx IN.mp4|CAMERA_INDEX OUT.avi [MAX_FRAMES]\n";
        return 2;
    }
    const std::string modelPath = argv[1], in = argv[2], out = argv[3];
    try {
        ClipLit model(modelPath);
        if (isImagePath(in)) {
            return enhanceImage(model, in, out);
        }
        const long maxFrames = argc == 5 ? std::stol(argv[4]) : (isDigits(in) ? 100 : -1);
        return enhanceVideo(model, in, out, maxFrames);
    } catch (const cv::Exception& error) {
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    }
}
