//! End to end over loopback gRPC: the generated servers and clients talk to
//! each other, `google.protobuf.Empty` maps to `()`, the emulator service's
//! unimplemented methods answer UNIMPLEMENTED (what the sim phone relies on),
//! and the PacketStreamer handshake works as a bidi stream.

use std::net::SocketAddr;
use std::pin::Pin;

use sensor_proto::emulator::emulator_controller_client::EmulatorControllerClient;
use sensor_proto::emulator::emulator_controller_server::{
    EmulatorController, EmulatorControllerServer,
};
use sensor_proto::emulator::{EmulatorStatus, Image, ImageFormat, SensorValue};
use sensor_proto::netsim::common::ChipKind;
use sensor_proto::netsim::packet::packet_streamer_client::PacketStreamerClient;
use sensor_proto::netsim::packet::packet_streamer_server::{PacketStreamer, PacketStreamerServer};
use sensor_proto::netsim::packet::{
    HciPacket, PacketRequest, PacketResponse, packet_request, packet_response,
};
use sensor_proto::netsim::startup::{Chip, ChipInfo};
use tonic::codegen::BoxStream;
use tonic::codegen::tokio_stream::{self, Stream, StreamExt as _};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// A minimal sim phone: only getStatus and streamScreenshot.
struct Sim;

#[tonic::async_trait]
impl EmulatorController for Sim {
    async fn get_status(&self, _: Request<()>) -> Result<Response<EmulatorStatus>, Status> {
        Ok(Response::new(EmulatorStatus {
            version: "vphone-sim".into(),
            booted: true,
            ..EmulatorStatus::default()
        }))
    }

    async fn stream_screenshot(
        &self,
        request: Request<ImageFormat>,
    ) -> Result<Response<BoxStream<Image>>, Status> {
        let format = request.into_inner();
        let frames = (0..3u32).map(move |seq| {
            Ok(Image {
                format: Some(format.clone()),
                seq,
                ..Image::default()
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(frames))))
    }
}

/// Answers HCI_Reset with Command Complete; errors on data before init.
struct Streamer;

type ResponseStream = Pin<Box<dyn Stream<Item = Result<PacketResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PacketStreamer for Streamer {
    type StreamPacketsStream = ResponseStream;

    async fn stream_packets(
        &self,
        request: Request<Streaming<PacketRequest>>,
    ) -> Result<Response<Self::StreamPacketsStream>, Status> {
        let mut initialized = false;
        let out = request.into_inner().filter_map(move |req| {
            let req = match req {
                Ok(req) => req,
                Err(status) => return Some(Err(status)),
            };
            let response_type = match req.request_type {
                Some(packet_request::RequestType::InitialInfo(_)) => {
                    initialized = true;
                    return None;
                }
                Some(packet_request::RequestType::HciPacket(_)) if initialized => {
                    let event = HciPacket::from_h4(&[0x04, 0x0e, 0x04, 0x01, 0x03, 0x0c, 0x00])
                        .expect("valid H4");
                    packet_response::ResponseType::HciPacket(event)
                }
                _ => packet_response::ResponseType::Error("Unexpected request type".into()),
            };
            Some(Ok(PacketResponse {
                response_type: Some(response_type),
            }))
        });
        Ok(Response::new(Box::pin(out)))
    }
}

async fn serve() -> SocketAddr {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = incoming.local_addr().expect("local addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EmulatorControllerServer::new(Sim))
            .add_service(PacketStreamerServer::new(Streamer))
            .serve_with_incoming(incoming),
    );
    addr
}

#[tokio::test]
async fn emulator_service_round_trip_and_default_stubs() {
    let addr = serve().await;
    let mut client = EmulatorControllerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let status = client.get_status(()).await.expect("getStatus").into_inner();
    assert_eq!(status.version, "vphone-sim");
    assert!(status.booted);

    let mut frames = client
        .stream_screenshot(ImageFormat {
            width: 10,
            ..ImageFormat::default()
        })
        .await
        .expect("streamScreenshot")
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(image) = frames.message().await.expect("frame") {
        assert_eq!(image.format.map(|f| f.width), Some(10));
        seqs.push(image.seq);
    }
    assert_eq!(seqs, vec![0, 1, 2]);

    let err = client
        .set_sensor(SensorValue::default())
        .await
        .expect_err("not implemented by the sim");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn packet_streamer_handshake() {
    let addr = serve().await;
    let mut client = PacketStreamerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let requests = vec![
        PacketRequest {
            request_type: Some(packet_request::RequestType::InitialInfo(ChipInfo {
                name: "test".into(),
                chip: Some(Chip {
                    kind: ChipKind::Bluetooth as i32,
                    ..Chip::default()
                }),
                ..ChipInfo::default()
            })),
        },
        PacketRequest {
            request_type: Some(packet_request::RequestType::HciPacket(
                HciPacket::from_h4(&[0x01, 0x03, 0x0c, 0x00]).expect("valid H4"),
            )),
        },
    ];
    let mut responses = client
        .stream_packets(tokio_stream::iter(requests))
        .await
        .expect("StreamPackets")
        .into_inner();
    let first = responses
        .message()
        .await
        .expect("ok")
        .expect("one response");
    let Some(packet_response::ResponseType::HciPacket(event)) = first.response_type else {
        panic!("expected an HCI event, got {first:?}");
    };
    assert_eq!(
        event.to_h4().expect("valid"),
        vec![0x04, 0x0e, 0x04, 0x01, 0x03, 0x0c, 0x00]
    );
    assert!(responses.message().await.expect("ok").is_none());
}
